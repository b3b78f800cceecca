"""The IM client's connection pool: the environment's proxy and CA settings, resolved once by the
config for IM's host."""

from __future__ import annotations

import urllib3

from receiver.config import load_config
from receiver.im.client import new_pool

IM = "https://console.tim.qq.com"


def pool_for(**environ: str) -> urllib3.PoolManager:
    """The pool an IM client gets under exactly this environment (no .env file)."""
    config = load_config({"IM_API_BASE": IM, **environ}, dotenv_path=None)
    proxy = config.im_proxy_url.reveal() if config.im_proxy_url else None
    return new_pool(proxy_url=proxy, ca_bundle=config.im_ca_bundle)


def test_a_proxy_for_the_host_is_used():
    pool = pool_for(HTTPS_PROXY="http://proxy.internal:3128")
    assert isinstance(pool, urllib3.ProxyManager) and pool.proxy.host == "proxy.internal"


def test_no_proxy_exempts_the_host():
    assert not isinstance(pool_for(HTTPS_PROXY="http://proxy.internal:3128", NO_PROXY="tim.qq.com"),
                          urllib3.ProxyManager)


def test_a_ca_bundle_from_the_environment_is_used():
    assert pool_for(REQUESTS_CA_BUNDLE="/etc/ssl/corp.pem").connection_pool_kw["ca_certs"] == "/etc/ssl/corp.pem"
    assert pool_for().connection_pool_kw["ca_certs"] is None


def test_the_pool_keeps_a_connection_per_sender():
    assert new_pool(pool_size=32).connection_pool_kw["maxsize"] == 32


def test_proxy_credentials_go_in_a_header_not_the_url():
    pool = pool_for(HTTPS_PROXY="http://us%40er:p%3Ass@proxy.internal:3128")
    assert isinstance(pool, urllib3.ProxyManager) and pool.proxy.host == "proxy.internal"
    assert pool.proxy.auth is None
    assert pool.proxy_headers["proxy-authorization"] == urllib3.make_headers(
        proxy_basic_auth="us@er:p:ss")["proxy-authorization"]


def test_all_proxy_applies_when_no_scheme_proxy_is_set():
    assert isinstance(pool_for(ALL_PROXY="http://proxy.internal:3128"), urllib3.ProxyManager)


def test_a_ca_directory_is_used_as_one(tmp_path):
    kw = pool_for(REQUESTS_CA_BUNDLE=str(tmp_path)).connection_pool_kw
    assert kw["ca_cert_dir"] == str(tmp_path) and "ca_certs" not in kw


def test_the_proxy_url_never_shows_in_the_config():
    config = load_config({"IM_API_BASE": IM, "HTTPS_PROXY": "http://user:hunter2@proxy:3128"}, dotenv_path=None)
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.public_summary())
