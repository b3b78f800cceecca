"""The callback endpoint's request parsing reads what werkzeug's Request would, without building one."""

from __future__ import annotations

import io

import pytest
from werkzeug.wrappers import Request

from receiver.callbacks.endpoint import _Request

QUERIES = [
    "",
    "SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterGroupDestroyed&Sign=ab&RequestTime=17",
    "a=1&a=2&b=&c",  # repeated keys (first wins for get), blank and bare keys kept
    "x=%E4%BD%A0%E5%A5%BD&y=a+b&z=%zz&w=%FF",  # UTF-8, plus, invalid and non-UTF-8 escapes
    "Sign=1;2&k=v%26w",
    "&&a=1&&b=2&",  # empty pieces skipped
    "=x&a=b=c&a&d==",  # blank key, '=' in a value, a repeated bare key
    "a=caf\u00c3\u00a9&b=\u00e2\u0082\u00ac",  # UTF-8 bytes as the server hands them over (latin-1)
]


def environ(query: str, **extra) -> dict:
    body = extra.pop("body", b'{"a": 1}')
    env = {"REQUEST_METHOD": "post", "QUERY_STRING": query, "wsgi.input": io.BytesIO(body),
           "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json; charset=utf-8",
           "CONTENT_LENGTH": str(len(body))}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize("query", QUERIES)
def test_args_are_werkzeugs(query):
    ours, theirs = _Request(environ(query)), Request(environ(query))
    assert list(ours.args.lists()) == list(theirs.args.lists())
    for key in ("a", "b", "c", "x", "y", "z", "w", "Sign", "SdkAppid", "missing"):
        assert ours.args.get(key) == theirs.args.get(key)


@pytest.mark.parametrize("extra", [
    {},
    {"CONTENT_LENGTH": None, "CONTENT_TYPE": None},
    {"CONTENT_LENGTH": "junk"},
    {"CONTENT_LENGTH": "-5"},
    {"CONTENT_LENGTH": None, "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True},
    {"CONTENT_LENGTH": None},  # no length, no terminated input: werkzeug reads nothing
    {"CONTENT_LENGTH": "3"},  # shorter than the body: only that much is read
])
def test_method_length_type_address_and_body_are_werkzeugs(extra):
    ours, theirs = _Request(environ("a=1", **extra)), Request(environ("a=1", **extra))
    assert (ours.method, ours.content_length, ours.content_type, ours.remote_addr) == \
        (theirs.method, theirs.content_length, theirs.content_type, theirs.remote_addr)
    assert ours.stream.read() == theirs.stream.read()


def test_a_query_string_that_is_not_utf8_is_read_not_raised():
    # werkzeug's Request raises UnicodeDecodeError here; gunicorn refuses such a request line
    # earlier, but no server must be able to turn it into an unhandled error.
    args = _Request(environ("a=\xff\xfe&b=2")).args
    assert args.get("b") == "2" and args.get("a") == "\ufffd\ufffd"
