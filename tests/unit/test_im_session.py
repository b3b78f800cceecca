"""The IM client's HTTP session reads the environment's proxy settings once, for IM's host."""

from __future__ import annotations

from receiver.im.client import new_session


def test_a_proxy_for_the_host_is_kept(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = new_session(base_url="https://console.tim.qq.com")
    assert session.proxies.get("https") == "http://proxy.internal:3128"
    assert session.trust_env is False  # not re-read on every call


def test_no_proxy_exempts_the_host(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "tim.qq.com")
    session = new_session(base_url="https://console.tim.qq.com")
    assert "https" not in session.proxies


def test_a_ca_bundle_from_the_environment_is_used(monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    assert new_session(base_url="https://console.tim.qq.com").verify == "/etc/ssl/corp.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert new_session(base_url="https://console.tim.qq.com").verify is True
