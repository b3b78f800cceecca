"""Configuration is read in one place, validated, and never shows a secret."""

import pytest

from receiver.config import ConfigError, load_config


def test_defaults_follow_the_contract():
    cfg = load_config({}, dotenv_path=None)
    assert cfg.database_url == "sqlite:///instance/receiver.db"
    assert cfg.im_sdkappid == 1400000000
    assert cfg.im_secret_key is None
    assert cfg.im_admin_identifier == "administrator"
    assert cfg.im_api_base == "https://console.tim.qq.com"
    assert cfg.im_callback_tokens == ()
    assert cfg.im_callback_max_skew_seconds == 60
    assert cfg.im_rate_limit_per_second == 200
    assert cfg.confirm_timeout_seconds == 120
    assert cfg.api_tokens == ()
    assert cfg.redis_url is None
    assert str(cfg.spool_dir) == "instance/spool"
    assert cfg.im_callback_allowed_ips == ()


def test_secrets_never_show_in_repr_or_summary():
    env = {"IM_SECRET_KEY": "s3cr3t-key", "IM_CALLBACK_TOKEN": "cb-token", "API_TOKENS": "tok-a, tok-b",
           "REDIS_URL": "redis://:pw@127.0.0.1:6379/0", "DATABASE_URL": "postgresql://u:dbpw@127.0.0.1/x"}
    cfg = load_config(env, dotenv_path=None)
    text = repr(cfg) + str(cfg.public_summary())
    for secret in ("s3cr3t-key", "cb-token", "tok-a", "tok-b", ":pw@", "dbpw"):
        assert secret not in text
    assert [t.reveal() for t in cfg.api_tokens] == ["tok-a", "tok-b"]
    assert cfg.database_url.startswith("postgresql+psycopg://")


@pytest.mark.parametrize("env,name", [
    ({"IM_SDKAPPID": "abc"}, "IM_SDKAPPID"),
    ({"IM_RATE_LIMIT_PER_SECOND": "0"}, "IM_RATE_LIMIT_PER_SECOND"),
    ({"IM_API_BASE": "console.tim.qq.com"}, "IM_API_BASE"),
    ({"IM_CALLBACK_ALLOWED_IPS": "10.0.0.0/8,not-an-ip"}, "IM_CALLBACK_ALLOWED_IPS"),
    ({"METRICS_PUBLIC": "maybe"}, "METRICS_PUBLIC"),
    # Accepted once, then a crash at run time (an unknown level, a float or date overflow, a
    # 500 from a column too small):
    ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
    ({"IM_HTTP_TIMEOUT_SECONDS": "9" * 400}, "IM_HTTP_TIMEOUT_SECONDS"),
    ({"CONFIRM_TIMEOUT_SECONDS": str(10**12)}, "CONFIRM_TIMEOUT_SECONDS"),
    ({"DISPATCH_LEASE_SECONDS": str(10**12)}, "DISPATCH_LEASE_SECONDS"),
    ({"IM_SDKAPPID": str(2**63)}, "IM_SDKAPPID"),
    ({"IM_SDKAPPID": "١٤٠٠"}, "IM_SDKAPPID"),
    ({"PORT": "70000"}, "PORT"),
])
def test_bad_values_fail_at_startup_naming_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        load_config(env, dotenv_path=None)


def test_dotenv_file_is_read_and_environment_wins(tmp_path):
    f = tmp_path / ".env"
    f.write_text("IM_SDKAPPID=1400000123\nCONFIRM_TIMEOUT_SECONDS=30\n")
    cfg = load_config({"CONFIRM_TIMEOUT_SECONDS": "45"}, dotenv_path=str(f))
    assert cfg.im_sdkappid == 1400000123
    assert cfg.confirm_timeout_seconds == 45
