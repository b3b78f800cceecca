"""The IM client against the simulator over real HTTP: every error code, callbacks and fault knobs."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from typing import Any, Iterator

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from receiver.config import Secret
from receiver.im.client import IMRestClient, ProbeState
from receiver.im.errors import CODE_BAD_ANSWER, CODE_HTTP_STATUS, CODE_NETWORK, ErrorKind, IMError
from receiver.im.fake import FakeIMClient
from receiver.im.ratelimit import UnlimitedLimiter
from receiver.im.usersig import AdminSigner, generate
from tests.fixtures.imsim import (
    SIM_ADMIN,
    SIM_CALLBACK_TOKEN,
    SIM_SDKAPPID,
    SIM_SECRET_KEY,
    client_config,
)


def expect_error(fn, *args: Any, **kwargs: Any) -> IMError:
    with pytest.raises(IMError) as err:
        fn(*args, **kwargs)
    return err.value


def errors_of(sim, api: str) -> dict[str, int]:
    return sim.state.stats()["apis"][api]["errors"]


# -- the group APIs ------------------------------------------------------------------------------

@pytest.mark.parametrize("group_type, prefix", [
    ("Private", "@TGS#"), ("Public", "@TGS#"), ("ChatRoom", "@TGS#"), ("AVChatRoom", "@TGS#"),
    ("Community", "@TGS#_@TGS#"),
])
def test_create_probe_destroy_round_trip(imsim, im_client_factory, group_type, prefix):
    client = im_client_factory(imsim)
    gid = client.create_group(group_type, "team", owner="leckie")
    assert gid.startswith(prefix) and (group_type == "Community") == gid.startswith("@TGS#_")
    probe = client.get_group_info([gid])[gid]
    assert probe.state is ProbeState.EXISTS and probe.info["Type"] == group_type
    call = client.destroy_group(gid)
    assert (call.api, call.http_status, call.error_code, call.error_info) == ("destroy_group", 200, 0, "")
    assert call.duration > 0
    assert client.get_group_info([gid])[gid].state is ProbeState.GONE


def test_destroying_twice_says_gone(imsim, im_client_factory):
    client = im_client_factory(imsim)
    gid = client.create_group("Public", "g")
    client.destroy_group(gid)
    err = expect_error(client.destroy_group, gid)
    assert (err.code, err.kind, err.api) == (10010, ErrorKind.GONE, "destroy_group")


def test_destroy_malformed_id_is_10015_and_gone(imsim, im_client_factory):
    # No group can have that ID: the group the dismissal asks to be rid of does not exist.
    err = expect_error(im_client_factory(imsim).destroy_group, "x" * 49)
    assert (err.code, err.kind) == (10015, ErrorKind.GONE)


def test_destroy_without_group_id_is_10004(imsim, im_client_factory):
    err = expect_error(im_client_factory(imsim).destroy_group, "")
    assert (err.code, err.kind) == (10004, ErrorKind.TERMINAL)


def test_probe_reads_each_groups_own_error_code(imsim, im_client_factory):
    client = im_client_factory(imsim)
    alive = client.create_group("Private", "alive", owner="a", members=["b", "c"])
    gone = client.create_group("Private", "gone")
    client.destroy_group(gone)
    probes = client.get_group_info([alive, gone, "never-existed", "bad\x01id"])
    assert probes[alive].exists and probes[alive].info["MemberNum"] == 3
    assert (probes[gone].state, probes[gone].error_code) == (ProbeState.GONE, 10010)
    assert (probes["never-existed"].state, probes["never-existed"].error_code) == (ProbeState.GONE, 10010)
    assert (probes["bad\x01id"].state, probes["bad\x01id"].error_code) == (ProbeState.GONE, 10015)


def test_probe_takes_at_most_50_groups(imsim, im_client_factory):
    client = im_client_factory(imsim)
    assert len(client.get_group_info([f"g{i}" for i in range(50)])) == 50
    with pytest.raises(ValueError):
        client.get_group_info([f"g{i}" for i in range(51)])


@pytest.mark.parametrize("kwargs, code", [
    ({"type": "Work", "name": "n"}, 10004),
    ({"type": "Public", "name": ""}, 10004),
    ({"type": "AVChatRoom", "name": "n", "members": ["bob"]}, 10007),
    ({"type": "Public", "name": "n", "group_id": "@TGS#mine"}, 10015),
    ({"type": "Public", "name": "n", "group_id": "x" * 49}, 10015),
    ({"type": "Public", "name": "n", "group_id": "tab\there"}, 10015),
    ({"type": "Community", "name": "n", "group_id": "my-community"}, 10015),
])
def test_create_group_rejections(imsim, im_client_factory, kwargs, code):
    err = expect_error(im_client_factory(imsim).create_group, **kwargs)
    assert (err.code, err.kind) == (code, ErrorKind.TERMINAL)


def test_custom_ids_are_echoed_and_unique(imsim, im_client_factory):
    client = im_client_factory(imsim)
    assert client.create_group("Public", "n", group_id="x" * 48) == "x" * 48
    assert client.create_group("Community", "n", group_id="@TGS#_my-community") == "@TGS#_my-community"
    assert expect_error(client.create_group, "Public", "n", group_id="x" * 48).code == 10021


# -- signatures and identity ---------------------------------------------------------------------

class StepClock:
    """Wall clock that answers `first` once, then the real time."""

    def __init__(self, first: float) -> None:
        self.first: float | None = first

    def __call__(self) -> float:
        value, self.first = (self.first, None) if self.first is not None else (time.time(), None)
        return value


def test_expired_sig_is_renewed_and_retried_once(imsim):
    signer = AdminSigner(SIM_SDKAPPID, Secret(SIM_SECRET_KEY), SIM_ADMIN, expire_seconds=60,
                         clock=StepClock(time.time() - 3600))
    client = IMRestClient(client_config(imsim), limiter=UnlimitedLimiter(), signer=signer)
    gid = client.create_group("Public", "n")
    assert errors_of(imsim, "create_group") == {"70001": 1}
    assert signer.renewals == 2 and client.get_group_info([gid])[gid].exists
    client.close()


def test_resign_is_attempted_only_once(imsim):
    signer = AdminSigner(SIM_SDKAPPID, Secret(SIM_SECRET_KEY), SIM_ADMIN, expire_seconds=60,
                         clock=lambda: time.time() - 3600)
    client = IMRestClient(client_config(imsim), limiter=UnlimitedLimiter(), signer=signer)
    err = expect_error(client.destroy_group, "g")
    assert (err.code, err.kind) == (70001, ErrorKind.RESIGN)
    assert errors_of(imsim, "destroy_group") == {"70001": 2}
    client.close()


@pytest.mark.parametrize("signer_args, admin, code", [
    ((SIM_SDKAPPID, "wrong-key", SIM_ADMIN), SIM_ADMIN, 70009),
    ((SIM_SDKAPPID, SIM_SECRET_KEY, "someone-else"), SIM_ADMIN, 70013),
    ((SIM_SDKAPPID + 1, SIM_SECRET_KEY, SIM_ADMIN), SIM_ADMIN, 70014),
    ((SIM_SDKAPPID, SIM_SECRET_KEY, "bob"), "bob", 10007),
])
def test_identity_errors_are_terminal(imsim, signer_args, admin, code):
    appid, key, ident = signer_args
    signer = AdminSigner(appid, Secret(key), ident)
    client = IMRestClient(client_config(imsim, im_admin_identifier=admin), limiter=UnlimitedLimiter(),
                          signer=signer)
    err = expect_error(client.destroy_group, "g")
    assert (err.code, err.kind) == (code, ErrorKind.TERMINAL)
    assert signer.current() not in str(err) + repr(err) + err.info
    client.close()


def raw_post(sim, command: str, params: dict[str, str], body: bytes = b'{"GroupId": "g"}') -> dict:
    resp = requests.post(f"{sim.url}/v4/group_open_http_svc/{command}", params=params, data=body, timeout=5)
    assert resp.status_code == 200
    return resp.json()


def good_params() -> dict[str, str]:
    return {"sdkappid": str(SIM_SDKAPPID), "identifier": SIM_ADMIN, "random": "4294967295",
            "usersig": generate(SIM_SDKAPPID, SIM_SECRET_KEY, SIM_ADMIN), "contenttype": "json"}


@pytest.mark.parametrize("change, body, code", [
    ({"sdkappid": None}, None, 60012),
    ({"sdkappid": "abc"}, None, 60012),
    ({"sdkappid": "²"}, None, 60012),  # a digit to str.isdigit, not to int()
    ({"random": "²"}, None, 60025),
    ({"usersig": None}, None, 60025),
    ({"contenttype": None}, None, 60025),
    ({"random": "4294967296"}, None, 60025),
    ({"usersig": "garbage"}, None, 70003),
    ({}, b"", 60003),
    ({}, b"{not json", 60003),
    ({}, b"[]", 60003),
    ({}, b"{}", 10004),
    ({}, None, 10010),
])
def test_request_format_is_checked(imsim, change, body, code):
    params = {k: v for k, v in (good_params() | change).items() if v is not None}
    answer = raw_post(imsim, "destroy_group", params, body if body is not None else b'{"GroupId": "g"}')
    assert answer["ErrorCode"] == code and answer["ActionStatus"] == "FAIL"


def test_unknown_command_is_10003(imsim):
    assert raw_post(imsim, "destroy_everything", good_params())["ErrorCode"] == 10003


# -- transport-level failures --------------------------------------------------------------------

def test_over_the_per_second_limit_is_60007_and_retryable(imsim_factory, im_client_factory):
    sim = imsim_factory(rate_limit=3)
    client = im_client_factory(sim)
    codes = []
    for _ in range(8):  # 8 quick calls span at most two calendar seconds: one of them gets > 3
        try:
            client.destroy_group("g")
        except IMError as err:
            codes.append((err.code, err.kind))
    assert (60007, ErrorKind.RETRYABLE) in codes
    assert sim.state.stats()["apis"]["destroy_group"]["max_per_second"] >= 4


def test_error_rate_answers_10002(imsim_factory, im_client_factory):
    client = im_client_factory(imsim_factory(error_rate=1.0))
    err = expect_error(client.destroy_group, "g")
    assert (err.code, err.kind) == (10002, ErrorKind.RETRYABLE)


def test_network_error_is_retryable_and_hides_the_sig():
    with make_server("127.0.0.1", 0, lambda e, s: []) as probe:
        port = probe.server_address[1]  # bound then closed: nothing listens there afterwards

    class Dead:
        url = f"http://127.0.0.1:{port}"

    client = IMRestClient(client_config(Dead), limiter=UnlimitedLimiter())
    err = expect_error(client.destroy_group, "g")
    assert (err.code, err.kind, err.http_status) == (CODE_NETWORK, ErrorKind.RETRYABLE, None)
    assert client.signer.current() not in str(err) + repr(err)
    assert err.__cause__ is None and err.__suppress_context__
    client.close()


@pytest.fixture
def canned_server() -> Iterator:
    """A server that answers every request with a fixed status and body."""
    servers = []

    def start(status: int, body: bytes):
        app = Response(body, status=status, mimetype="text/plain")
        server = make_server("127.0.0.1", 0, app)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append(server)

        class Running:
            url = f"http://127.0.0.1:{server.server_address[1]}"

        return Running

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status, body, code, kind", [
    (502, b"bad gateway", CODE_HTTP_STATUS, ErrorKind.RETRYABLE),
    (404, b"not found", CODE_HTTP_STATUS, ErrorKind.TERMINAL),
    (200, b"<html>oops</html>", CODE_BAD_ANSWER, ErrorKind.RETRYABLE),
    (200, b'{"ActionStatus": "OK"}', CODE_BAD_ANSWER, ErrorKind.RETRYABLE),
])
def test_http_failures(canned_server, status, body, code, kind):
    client = IMRestClient(client_config(canned_server(status, body)), limiter=UnlimitedLimiter())
    err = expect_error(client.destroy_group, "g")
    assert (err.code, err.kind) == (code, kind)
    client.close()


def test_every_call_acquires_the_limiter_first(imsim):
    limiter = UnlimitedLimiter()
    client = IMRestClient(client_config(imsim), limiter=limiter)
    gid = client.create_group("Public", "n")
    client.get_group_info([gid])
    client.destroy_group(gid)
    assert limiter.acquired == ["create_group", "get_group_info", "destroy_group"]
    client.close()


def test_requests_carry_fresh_random_and_no_secret_in_repr(imsim, im_client_factory):
    client = im_client_factory(imsim)
    assert SIM_SECRET_KEY not in repr(client) and client.signer.current() not in repr(client)
    assert client.http.connection_pool_kw["maxsize"] >= 32


# -- callbacks -----------------------------------------------------------------------------------

def test_callback_without_token(imsim_factory, im_client_factory, callback_catcher):
    sim = imsim_factory(callback_url=callback_catcher.url)
    client = im_client_factory(sim)
    gid = client.create_group("Public", "MyFirstGroup", owner="leckie", members=["peter", "bob"])
    before_ms = int(time.time() * 1000)
    client.destroy_group(gid)
    (cb,) = callback_catcher.wait_for(1)
    assert cb.args == {"SdkAppid": str(SIM_SDKAPPID), "CallbackCommand": "Group.CallbackAfterGroupDestroyed",
                       "contenttype": "json", "ClientIP": "127.0.0.1", "OptPlatform": "RESTAPI"}
    assert cb.body["GroupId"] == gid and cb.body["Type"] == "Public" and cb.body["Name"] == "MyFirstGroup"
    assert cb.body["Owner_Account"] == "leckie"
    assert cb.body["MemberList"] == [{"Member_Account": m} for m in ("leckie", "peter", "bob")]
    assert isinstance(cb.body["EventTime"], int) and before_ms - 1000 <= cb.body["EventTime"] <= time.time() * 1000


def test_callback_with_token_is_signed(imsim_factory, im_client_factory, callback_catcher):
    sim = imsim_factory(callback_url=callback_catcher.url, callback_token=Secret(SIM_CALLBACK_TOKEN))
    client = im_client_factory(sim)
    client.destroy_group(client.create_group("Community", "c", owner="o", members=["m"]))
    (cb,) = callback_catcher.wait_for(1)
    expected = hashlib.sha256((SIM_CALLBACK_TOKEN + cb.args["RequestTime"]).encode()).hexdigest()
    assert cb.args["Sign"] == expected and abs(int(cb.args["RequestTime"]) - time.time()) < 5
    assert "MemberList" not in cb.body and cb.body["Type"] == "Community"
    assert SIM_CALLBACK_TOKEN not in repr(sim.config)


def test_drop_rate_never_sends(imsim_factory, im_client_factory, callback_catcher):
    sim = imsim_factory(callback_url=callback_catcher.url, drop_rate=1.0, callback_first=True)
    client = im_client_factory(sim)
    client.destroy_group(client.create_group("Public", "n"))
    assert callback_catcher.received == [] and sim.state.stats()["callbacks"]["dropped"] == 1


def test_duplicate_rate_sends_twice(imsim_factory, im_client_factory, callback_catcher):
    sim = imsim_factory(callback_url=callback_catcher.url, duplicate_rate=1.0)
    client = im_client_factory(sim)
    client.destroy_group(client.create_group("Public", "n"))
    first, second = callback_catcher.wait_for(2)
    assert first.body == second.body
    assert sim.state.stats()["callbacks"]["duplicated"] == 1


def test_callback_first_arrives_before_the_rest_answer(imsim_factory, im_client_factory, callback_catcher):
    sim = imsim_factory(callback_url=callback_catcher.url, callback_first=True, callback_delay_ms=50)
    client = im_client_factory(sim)
    gid = client.create_group("Public", "n")
    started = time.monotonic()
    client.destroy_group(gid)
    assert len(callback_catcher.received) == 1 and time.monotonic() - started >= 0.05


def test_rest_answer_does_not_wait_for_a_slow_receiver(imsim_factory, im_client_factory, callback_catcher_factory):
    catcher = callback_catcher_factory(delay_seconds=0.5)
    sim = imsim_factory(callback_url=catcher.url)
    client = im_client_factory(sim)
    gid = client.create_group("Public", "n")
    started = time.monotonic()
    client.destroy_group(gid)
    assert time.monotonic() - started < 0.3
    catcher.wait_for(1)


def test_callback_delay(imsim_factory, im_client_factory, callback_catcher):
    sim = imsim_factory(callback_url=callback_catcher.url, callback_delay_ms=150)
    client = im_client_factory(sim)
    gid = client.create_group("Public", "n")
    sent = time.time()
    client.destroy_group(gid)
    (cb,) = callback_catcher.wait_for(1)
    assert cb.received_at - sent >= 0.15


def test_reorder_shuffles_a_window_and_flushes_partial_windows(imsim_factory, im_client_factory, callback_catcher):
    # One delivery thread: the order received is the order sent (several threads would race).
    sim = imsim_factory(callback_url=callback_catcher.url, reorder=4, reorder_hold_ms=1000, seed=3, callback_workers=1)
    client = im_client_factory(sim)
    gids = [client.create_group("Public", f"g{i}") for i in range(6)]
    for gid in gids:
        client.destroy_group(gid)
    got = [cb.body["GroupId"] for cb in callback_catcher.wait_for(6, timeout=10)]
    assert sorted(got) == sorted(gids)
    assert got[:4] != gids[:4]  # seed 3 shuffles the first full window out of order


def test_refused_callbacks_are_retried_then_counted_failed(imsim_factory, im_client_factory):
    with make_server("127.0.0.1", 0, lambda e, s: []) as probe:
        port = probe.server_address[1]
    sim = imsim_factory(callback_url=f"http://127.0.0.1:{port}/cb", callback_retry_backoff=(0.01,),
                        callback_first=True)
    client = im_client_factory(sim)
    client.destroy_group(client.create_group("Public", "n"))
    stats = sim.state.stats()["callbacks"]
    assert (stats["retried"], stats["failed"], stats["sent"]) == (3, 1, 0)


def test_non_200_answers_are_counted(imsim_factory, im_client_factory, callback_catcher_factory):
    catcher = callback_catcher_factory(status=500)
    sim = imsim_factory(callback_url=catcher.url, callback_first=True)
    client = im_client_factory(sim)
    client.destroy_group(client.create_group("Public", "n"))
    assert sim.state.stats()["callbacks"]["non_200"] == 1 and len(catcher.received) == 1


# -- stats and reset -----------------------------------------------------------------------------

def test_stats_and_reset_endpoints(imsim, im_client_factory):
    client = im_client_factory(imsim)
    gid = client.create_group("Public", "n")
    client.create_group("Public", "m")
    client.destroy_group(gid)
    expect_error(client.destroy_group, gid)
    stats = requests.get(f"{imsim.url}/_sim/stats", timeout=5).json()
    assert stats["apis"]["destroy_group"]["calls"] == 2
    assert stats["apis"]["destroy_group"]["errors"] == {"10010": 1}
    assert stats["apis"]["create_group"]["max_per_second"] >= 1
    assert stats["groups"] == {"alive": 1, "destroyed": 1}
    assert requests.post(f"{imsim.url}/_sim/reset", timeout=5).json() == {"ok": True}
    assert requests.get(f"{imsim.url}/_sim/stats", timeout=5).json()["groups"] == {"alive": 0, "destroyed": 0}


# -- the fake behaves like the real thing ----------------------------------------------------------

@pytest.fixture(params=["fake", "sim"])
def any_client(request, imsim_factory, im_client_factory):
    if request.param == "fake":
        return FakeIMClient()
    return im_client_factory(imsim_factory())


def test_fake_and_real_agree_on_the_life_of_a_group(any_client):
    gid = any_client.create_group("Public", "n", owner="o", members=["a"])
    assert any_client.get_group_info([gid])[gid].exists
    assert any_client.destroy_group(gid).error_code == 0
    assert any_client.get_group_info([gid, "nope"])["nope"].state is ProbeState.GONE
    err = expect_error(any_client.destroy_group, gid)
    assert (err.code, err.kind) == (10010, ErrorKind.GONE)
    with pytest.raises(ValueError):
        any_client.get_group_info([str(i) for i in range(51)])


def test_fake_scripts_errors_and_records_calls():
    destroyed = []
    fake = FakeIMClient(on_destroyed=destroyed.append)
    fake.add_group("g1", members=["a"])
    fake.fail_next("g1", 60007, times=2)
    fake.script("get_group_info", "g1", 10015)
    assert expect_error(fake.destroy_group, "g1").kind is ErrorKind.RETRYABLE
    assert expect_error(fake.destroy_group, "g1").code == 60007
    assert fake.get_group_info(["g1"])["g1"].state is ProbeState.GONE  # scripted answer
    fake.destroy_group("g1")
    assert [g.group_id for g in destroyed] == ["g1"]
    assert [c.api for c in fake.calls] == ["destroy_group"] * 2 + ["get_group_info", "destroy_group"]
    fake.script("get_group_info", None, IMError("get_group_info", 70500, "boom"))
    assert expect_error(fake.get_group_info, ["g1"]).kind is ErrorKind.RETRYABLE


# -- request shape and the imsim command -----------------------------------------------------------

def test_request_shape_is_tencents(imsim_factory, im_client_factory):
    seen: list[tuple[str, dict[str, str], bytes, str]] = []
    sim = imsim_factory()
    app = sim.app
    original = app.wsgi_app

    def spy(environ, start_response):  # record what reaches the simulator, then let it answer
        req = Request(environ)
        body = req.get_data()
        environ["wsgi.input"] = io.BytesIO(body)
        seen.append((req.method, dict(req.args), body, req.mimetype))
        return original(environ, start_response)

    app.wsgi_app = spy
    client = im_client_factory(sim)
    for _ in range(3):
        assert expect_error(client.destroy_group, "g").code == 10010
    assert {s[0] for s in seen} == {"POST"} and {s[3] for s in seen} == {"application/json"}
    assert all(set(args) == {"sdkappid", "identifier", "usersig", "random", "contenttype"} for _, args, _, _ in seen)
    assert len({args["random"] for _, args, _, _ in seen}) == 3
    assert all(0 <= int(args["random"]) <= 0xFFFFFFFF for _, args, _, _ in seen)
    assert [json.loads(body) for _, _, body, _ in seen] == [{"GroupId": "g"}] * 3


def test_imsim_command_builds_the_sim_from_config(monkeypatch):
    from click.testing import CliRunner

    from receiver.config import Config
    from receiver.imsim import cli

    started = []
    monkeypatch.setattr(cli, "serve", lambda host, port, sim_config: started.append((host, port, sim_config)))
    config = Config(im_sdkappid=SIM_SDKAPPID, im_secret_key=Secret(SIM_SECRET_KEY),
                    im_callback_tokens=(Secret("tok-1"), Secret("tok-2")), im_rate_limit_per_second=1000)
    result = CliRunner().invoke(cli.imsim_command, ["--port", "9001", "--callback-url", "http://x/cb",
                                                    "--reorder", "--drop-rate", "0.5", "--seed", "7"], obj=config)
    assert result.exit_code == 0, result.output
    ((host, port, sc),) = started
    assert (host, port, sc.sdkappid, sc.callback_url, sc.reorder, sc.drop_rate, sc.seed) == (
        "127.0.0.1", 9001, SIM_SDKAPPID, "http://x/cb", 4, 0.5, 7)
    assert sc.callback_token == Secret("tok-1") and SIM_SECRET_KEY not in result.output
    assert sc.rate_limit == 200  # IM's limit, not the one we set for ourselves (CONTRACT §6)


def test_imsim_command_refuses_without_a_secret_key():
    from click.testing import CliRunner

    from receiver.config import Config
    from receiver.imsim import cli

    result = CliRunner().invoke(cli.imsim_command, [], obj=Config(im_secret_key=None))
    assert result.exit_code == 2 and "IM_SECRET_KEY" in result.output
