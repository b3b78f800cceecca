"""The IM client's connection pool reads the environment's proxy and CA settings once, for IM's host."""

from __future__ import annotations

import urllib3

from receiver.im.client import new_pool

IM = "https://console.tim.qq.com"
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


def proxy_env(monkeypatch, **values: str) -> None:
    """Only these proxy variables set (either spelling of the others is cleared)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_a_proxy_for_the_host_is_used(monkeypatch):
    proxy_env(monkeypatch, HTTPS_PROXY="http://proxy.internal:3128")
    pool = new_pool(IM)
    assert isinstance(pool, urllib3.ProxyManager) and pool.proxy.host == "proxy.internal"


def test_no_proxy_exempts_the_host(monkeypatch):
    proxy_env(monkeypatch, HTTPS_PROXY="http://proxy.internal:3128", NO_PROXY="tim.qq.com")
    assert not isinstance(new_pool(IM), urllib3.ProxyManager)


def test_a_ca_bundle_from_the_environment_is_used(monkeypatch):
    proxy_env(monkeypatch)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    assert new_pool(IM).connection_pool_kw["ca_certs"] == "/etc/ssl/corp.pem"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert new_pool(IM).connection_pool_kw["ca_certs"] is None


def test_the_pool_keeps_a_connection_per_sender():
    assert new_pool(IM, pool_size=32).connection_pool_kw["maxsize"] == 32


def test_proxy_credentials_go_in_a_header_not_the_url(monkeypatch):
    proxy_env(monkeypatch, HTTPS_PROXY="http://us%40er:p%3Ass@proxy.internal:3128")
    pool = new_pool(IM)
    assert isinstance(pool, urllib3.ProxyManager) and pool.proxy.host == "proxy.internal"
    assert pool.proxy.auth is None
    assert pool.proxy_headers["proxy-authorization"] == urllib3.make_headers(
        proxy_basic_auth="us@er:p:ss")["proxy-authorization"]


def test_all_proxy_applies_when_no_scheme_proxy_is_set(monkeypatch):
    proxy_env(monkeypatch, ALL_PROXY="http://proxy.internal:3128")
    assert isinstance(new_pool(IM), urllib3.ProxyManager)


def test_a_ca_directory_is_used_as_one(monkeypatch, tmp_path):
    proxy_env(monkeypatch)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))
    kw = new_pool(IM).connection_pool_kw
    assert kw["ca_cert_dir"] == str(tmp_path) and "ca_certs" not in kw
