"""validate_body shares one JSON decoder (and its duplicate-key hook) between request threads."""

from __future__ import annotations

import json
import threading

from receiver.callbacks.parsing import Parsed, Refused, validate_body
from tests.helpers import destroyed_body, encode

CMD = "Group.CallbackAfterGroupDestroyed"


def test_threads_decoding_at_once_each_get_their_own_body_and_verdict():
    failures: list[str] = []

    def work(t: int) -> None:
        for n in range(300):
            if n % 3 == 0:  # a duplicate key: refused, and must not leak into a neighbour's parse
                raw = b'{"CallbackCommand": "%s", "GroupId": "a", "GroupId": "b"}' % CMD.encode()
                result = validate_body(raw, CMD)
                if not (isinstance(result, Refused) and "duplicate key" in result.reason):
                    failures.append(f"{t}/{n}: {result}")
                continue
            group = f"@TGS#t{t}-{n}"
            body = destroyed_body(group)
            body["MemberList"] = [{"Member_Account": f"m{t}-{n}-{i}"} for i in range(20)]
            result = validate_body(encode(body), CMD)
            if not (isinstance(result, Parsed) and result.data["group_id"] == group
                    and [m["account"] for m in result.data["members"]] == [f"m{t}-{n}-{i}" for i in range(20)]
                    and result.body == json.loads(encode(body))):
                failures.append(f"{t}/{n}: {result}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_a_byte_order_mark_is_refused_as_json_loads_refuses_it():
    result = validate_body(b"\xef\xbb\xbf" + encode(destroyed_body("@TGS#BOM")), CMD)
    assert isinstance(result, Refused) and "Unexpected UTF-8 BOM" in result.reason
