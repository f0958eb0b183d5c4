"""HTTP/1.1 framing as pure functions (host/proxy/framing.py): heads, body-length rules,
chunking and the wire-safety checks, without a socket."""

from __future__ import annotations

from host.headers import HeaderMap
from host.proxy import framing
from host.proxy.framing import RequestHead, ResponseHead


def _req(*extra: tuple[str, str]) -> HeaderMap:
    return HeaderMap([(":method", "POST"), (":path", "/p?q=1"), (":authority", "svc"), *extra])


def test_a_whole_released_request_body_sets_its_content_length() -> None:
    head = framing.request_head(
        _req(("content-length", "99"), ("connection", "x")),
        b"up:80",
        None,
        True,
        [b"ab", b"c"],
        True,
    )
    assert head == RequestHead(
        b"POST /p?q=1 HTTP/1.1\r\nhost: svc\r\ncontent-length: 3\r\n\r\n", False, 3
    )


def test_a_streamed_request_keeps_its_declared_length_or_is_chunked() -> None:
    declared = framing.request_head(_req(("content-length", "10")), b"up", None, False, [], True)
    assert isinstance(declared, RequestHead) and (declared.chunked, declared.declared) == (
        False,
        10,
    )
    chunked = framing.request_head(_req(), b"up", None, False, [], True)
    assert isinstance(chunked, RequestHead) and chunked.chunked and chunked.declared == -1
    assert b"transfer-encoding: chunked" in chunked.data


def test_trailers_force_chunked_framing_and_end_the_body() -> None:
    trailers = HeaderMap([("x-sum", "7")])
    head = framing.request_head(_req(), b"up", trailers, True, [b"abc"], True)
    assert isinstance(head, RequestHead) and head.chunked
    assert framing.chunk(b"abc") + framing.trailer_block(trailers) == (
        b"3\r\nabc\r\n0\r\nx-sum: 7\r\n\r\n"
    )
    assert framing.trailer_block(None) == b"0\r\n\r\n"


def test_the_cluster_address_is_the_host_without_an_authority() -> None:
    h = HeaderMap([(":method", "GET"), (":path", "/")])
    head = framing.request_head(h, b"10.0.0.1:8080", None, True, [], False)
    assert isinstance(head, RequestHead)
    assert head.data == b"GET / HTTP/1.1\r\nhost: 10.0.0.1:8080\r\n\r\n"


def test_an_unserializable_request_head_says_why() -> None:
    assert framing.request_head(_req(("x-a", "1\r\nx: y")), b"up", None, True, [], False) == (
        "header x-a has CR, LF or NUL in its value"
    )
    bad_name = framing.request_head(_req(("bad name", "v")), b"up", None, True, [], False)
    assert bad_name == "invalid header name b'bad name'"
    bad_path = HeaderMap([(":method", "GET"), (":path", "http://x/")])
    assert "invalid :path" in str(framing.request_head(bad_path, b"up", None, True, [], False))
    bad_trailer = HeaderMap([("x", "a\nb")])
    assert str(framing.request_head(_req(), b"up", bad_trailer, True, [], True)).startswith(
        "trailer: "
    )


def test_response_heads_follow_the_body_length_rules() -> None:
    h = HeaderMap([(":status", "200"), ("content-length", "5"), ("keep-alive", "x"), ("a", "b")])
    whole = framing.response_head(h, None, True, [b"hi"], False, False)
    assert whole == ResponseHead(
        b"HTTP/1.1 200 OK\r\na: b\r\ncontent-length: 2\r\n\r\n", 200, False, 2
    )
    head_req = framing.response_head(h, None, True, [], True, True)
    assert head_req is not None and head_req.declared == 5
    assert head_req.data.endswith(b"content-length: 5\r\nconnection: close\r\n\r\n")
    streamed = framing.response_head(HeaderMap([(":status", "201")]), None, False, [], False, False)
    assert streamed is not None and streamed.chunked and streamed.status == 201
    no_body = framing.response_head(HeaderMap([(":status", "204")]), None, True, [], False, False)
    assert no_body == ResponseHead(b"HTTP/1.1 204 No Content\r\n\r\n", 204, False, -1)
    unknown = framing.response_head(HeaderMap([(":status", "599")]), None, True, [], False, False)
    assert unknown is not None and unknown.data.startswith(b"HTTP/1.1 599 Unknown\r\n")


def test_an_unserializable_response_head_is_refused() -> None:
    bad = HeaderMap([(":status", "200"), ("x", "a\0b")])
    assert framing.response_head(bad, None, True, [], False, False) is None
    bad_trailer = HeaderMap([("bad name", "v")])
    ok = HeaderMap([(":status", "200")])
    assert framing.response_head(ok, bad_trailer, False, [], False, False) is None


def test_local_replies_and_parse_errors_are_whole_messages() -> None:
    headers = [(b"x-why", b"policy"), (b"content-length", b"99"), (b"connection", b"x")]
    assert not framing.reply_problem(headers)
    assert framing.reply_problem([(b"x", b"a\rb")])
    # a local reply goes out as the exchange sends it: headers with its length, then data
    reply = HeaderMap.from_pairs([(b":status", b"403"), *headers[:1], *headers[2:]])
    reply.add(b"content-length", b"3")
    head = framing.response_head(reply, None, False, [], False, True)
    assert head is not None and head.data + b"no\n" == (
        b"HTTP/1.1 403 Forbidden\r\nx-why: policy\r\ncontent-length: 3\r\n"
        b"connection: close\r\n\r\nno\n"
    )
    head = framing.response_head(reply, None, True, [], True, False)  # to a HEAD: no body
    assert head is not None and head.data.endswith(b"content-length: 3\r\n\r\n")
    assert framing.error_message(400, "bad") == (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n"
        b"connection: close\r\n\r\nbad\n"
    )


def test_request_ids_are_version_4_uuids() -> None:
    rid = framing.request_id()
    parts = rid.split(b"-")
    assert [len(p) for p in parts] == [8, 4, 4, 4, 12]
    assert parts[2][:1] == b"4" and parts[3][:1] in b"89ab"
    assert framing.request_id() != rid


# -- verified maps: the HTTP/1.1 parser's fields skip the scan, any change brings it back ---


def _parsed(*extra: tuple[bytes, bytes]) -> HeaderMap:
    items = [(b":method", b"GET"), (b":path", b"/"), (b":authority", b"svc"), *extra]
    return HeaderMap.wrap(items, verified=True)


def test_a_verified_map_frames_as_an_unverified_one() -> None:
    fields = ((b"user-agent", b"wrk"), (b"x-request-id", b"abc"))
    verified = framing.request_head(_parsed(*fields), b"up", None, True, [], False)
    plain = framing.request_head(
        HeaderMap.wrap([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"svc"), *fields]),
        b"up",
        None,
        True,
        [],
        False,
    )
    assert isinstance(verified, RequestHead) and verified == plain
    resp = [(b":status", b"200"), (b"server", b"x"), (b"content-length", b"2")]
    assert framing.response_head(
        HeaderMap.wrap(list(resp), verified=True), None, True, [b"ok"], False, False
    ) == framing.response_head(HeaderMap.wrap(list(resp)), None, True, [b"ok"], False, False)


def test_every_change_to_a_verified_map_is_checked_again() -> None:
    evil = b"a\r\nx-smuggled: 1"
    changes = [
        lambda h: h.add(b"x-evil", evil),
        lambda h: h.replace(b"x-request-id", evil),
        lambda h: (h.remove(b"x-request-id"), h.add(b"bad name", b"v")),
        lambda h: h.set_all([*h, (b"x-evil", b"a\x00b")]),
    ]
    for change in changes:
        h = _parsed((b"x-request-id", b"abc"))
        change(h)
        assert not h.verified
        assert isinstance(framing.request_head(h, b"up", None, True, [], False), str)
        resp = HeaderMap.wrap([(b":status", b"200")], verified=True)
        change(resp)
        assert framing.response_head(resp, None, True, [], False, False) is None
    # a copy is a new map: checked again too
    assert not _parsed().copy().verified


def test_a_field_checked_by_the_abi_or_a_removal_keeps_a_map_verified() -> None:
    h = _parsed((b"x-request-id", b"abc"), (b"x-drop", b"1"))
    h.add(b"x-added", b"v", checked=True)  # what proxy_add_header_map_value does
    h.replace(b"x-request-id", b"def", checked=True)
    h.remove(b"x-drop")
    assert h.verified
    head = framing.request_head(h, b"up", None, True, [], False)
    assert isinstance(head, RequestHead)
    assert b"x-added: v\r\n" in head.data and b"x-request-id: def\r\n" in head.data
    assert b"x-drop" not in head.data
    h.set_all([*h], checked=True)
    assert h.verified
