"""The HTTP/1.1 data path over real sockets: keep-alive, framing (content-length and
chunked, streamed both ways), Host/:authority, x-forwarded-for, x-request-id,
pipelining, HEAD, 204, the demo upstream, and bad input (issue §1, §6)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

from .conftest import (
    ScriptedUpstream,
    config_text,
    connect,
    free_port,
    is_closed,
    make_config,
    plugin,
    raw_exchange,
    read_response,
    wasm_plugin,
)

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def hdr(rec: dict, name: str) -> str | None:
    """A header of a request the ``upstream`` fixture recorded (case-insensitive)."""
    for k, v in rec["headers"].items():
        if k.lower() == name.lower():
            return v
    return None


def _echo(r) -> dict:
    """The JSON the echo upstreams send back."""
    return json.loads(r.body if hasattr(r, "body") else r.content)


# -- the demo upstream and keep-alive ----------------------------------------------------------


def test_demo_upstream_serves_when_no_cluster_is_configured(start_proxy):
    h = start_proxy(make_config())
    assert h.server.default_cluster.name == "wasmdesk-demo-upstream"
    with h.client() as c:
        r = c.post("/hello?x=1", content=b"payload")
    assert r.status_code == 200
    doc = r.json()
    assert doc["method"] == "POST"
    assert doc["path"] == "/hello"
    assert doc["query"] == "x=1"
    assert doc["body"] == "payload"
    assert r.headers["server"] == "wasmdesk-demo-upstream"


def test_keep_alive_reuses_the_client_and_the_upstream_connection(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    with connect(h) as s:
        f = s.makefile("rb")
        for i in range(5):
            s.sendall(f"GET /k{i} HTTP/1.1\r\nhost: a.test\r\n\r\n".encode())
            r = read_response(f)
            assert r.status == 200
            assert _echo(r)["path"] == f"/k{i}"
            assert r.header("connection") != "close"
    st = h.stats()
    assert st["http.downstream_cx_total"] == 1
    assert st["http.downstream_rq_total"] == 5
    # one pooled upstream connection served all five
    assert h.sync(lambda: h.server.pool.connects) == 1
    # and httpx over keep-alive agrees
    with h.client() as c:
        for _ in range(3):
            assert c.get("/again").status_code == 200
    assert h.sync(lambda: h.server.pool.connects) == 1
    assert h.stats()["http.downstream_cx_total"] == 2


def test_connection_close_from_the_client_is_honoured(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        f = s.makefile("rb")
        r = read_response(f)
        assert r.status == 200
        assert r.header("connection") == "close"
        assert is_closed(s)


def test_http_1_0_client_gets_one_response_and_a_close(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        s.sendall(b"GET /ten HTTP/1.0\r\n\r\n")
        f = s.makefile("rb")
        r = read_response(f)
        assert r.status == 200
        assert _echo(r)["path"] == "/ten"
        assert is_closed(s)


# -- bodies ------------------------------------------------------------------------------------


def test_content_length_request_body_passes_unchanged(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    body = bytes(range(256)) * 400  # 100 KiB, binary
    with h.client() as c:
        r = c.put("/upload", content=body)
    assert r.status_code == 200
    rec = upstream.requests[-1]
    assert rec["method"] == "PUT"
    assert int(hdr(rec, "Content-Length")) == len(body)
    assert rec["body"] == body.decode("utf-8", "replace")


def test_chunked_request_body_is_streamed_to_the_upstream(start_proxy, scripted_upstream):
    """The first chunk reaches the upstream before the client sends the second:
    nothing buffers a body no plugin asked to buffer."""

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        head = up.read_head(conn, buf)
        assert head is not None
        while b"0\r\n\r\n" not in buf:
            data = up.recv(conn)
            if not data:
                return
            buf += data
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with connect(h) as s:
        s.sendall(
            b"POST /stream HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst-\r\n"
        )
        h.wait_for(lambda: b"first-" in up.received, what="the first chunk upstream")
        assert b"second" not in up.received
        s.sendall(b"6\r\nsecond\r\n0\r\n\r\n")
        r = read_response(s.makefile("rb"))
    assert r.status == 200 and r.body == b"ok"
    head = bytes(up.received).split(b"\r\n\r\n", 1)[0].lower()
    assert b"transfer-encoding: chunked" in head
    assert b"second" in up.received


def test_chunked_response_is_streamed_to_the_client(start_proxy, scripted_upstream):
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is None:
            return
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nearly\r\n"
        )
        up.event("go").wait(5)
        conn.sendall(b"4\r\nlate\r\n0\r\n\r\n")

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with connect(h) as s:
        s.sendall(b"GET /chunks HTTP/1.1\r\nhost: x\r\n\r\n")
        f = s.makefile("rb")
        status = f.readline()
        assert b" 200 " in status
        headers = []
        while (ln := f.readline()) not in (b"\r\n", b""):
            headers.append(ln.lower())
        assert b"transfer-encoding: chunked\r\n" in headers
        # the first chunk arrives while the upstream still holds the rest
        assert f.readline() == b"5\r\n"
        assert f.readline() == b"early\r\n"
        up.event("go").set()
        assert f.readline() == b"4\r\n"
        assert f.readline() == b"late\r\n"
        assert f.readline() == b"0\r\n"


def test_content_length_is_set_when_a_plugin_buffers_and_rewrites_a_response(start_proxy):
    """body_rewrite removes content-length and changes the body's length: the proxy
    frames the rewritten body correctly (content-length of the new body)."""
    cfg = make_config(
        wasm_plugin(
            "rewrite",
            plugin("body_rewrite"),
            root_id="body_rewrite",
            config={"from": "hello", "to": "hello-hello-hello"},
        )
    )
    h = start_proxy(cfg)
    with connect(h) as s:
        f = s.makefile("rb")
        for _ in range(2):  # the connection stays usable: framing was right
            s.sendall(b"GET /rw HTTP/1.1\r\nhost: x\r\n\r\n")
            r = read_response(f)
            assert r.status == 200
            assert int(r.header("content-length")) == len(r.body)
            doc = json.loads(r.body)
            assert doc["message"] == "hello-hello-hello from the wasmdesk demo upstream"


def test_request_body_buffered_by_a_plugin_gets_a_content_length(start_proxy, upstream):
    """body_echo_request buffers the whole request body and rewrites it: a chunked
    request reaches the upstream with the real content-length and the new body."""
    cfg = make_config(
        wasm_plugin("echo-body", plugin("body_echo_request"), root_id="body_echo_request"),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with connect(h) as s:
        s.sendall(
            b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
        )
        r = read_response(s.makefile("rb"))
    assert r.status == 200
    rec = upstream.requests[-1]
    assert rec["body"] == "HELLO WORLD"
    assert hdr(rec, "Content-Length") == "11"
    assert hdr(rec, "Transfer-Encoding") is None


def test_request_with_content_length_through_a_buffering_plugin(start_proxy, upstream):
    cfg = make_config(
        wasm_plugin("echo-body", plugin("body_echo_request"), root_id="body_echo_request"),
        clusters={"backend": upstream.url},
    )
    h = start_proxy(cfg)
    with h.client() as c:
        for n in (1, 70_000):
            body = b"abc" * n
            r = c.post("/cl", content=body)
            assert r.status_code == 200
            got = upstream.requests[-1]
            assert got["body"] == body.upper().decode()
            assert hdr(got, "Content-Length") == str(len(body))


# -- request headers the proxy manages ---------------------------------------------------------


def test_host_and_authority(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    (r,) = raw_exchange(h, b"GET /h HTTP/1.1\r\nHost: example.test:8080\r\n\r\n")
    assert r.status == 200
    assert hdr(upstream.requests[-1], "Host") == "example.test:8080"
    # absolute-form target: the authority comes from the URL
    (r,) = raw_exchange(h, b"GET http://other.test:81/abs?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
    assert r.status == 200
    last = upstream.requests[-1]
    assert last["path"] == "/abs?q=1"
    assert hdr(last, "Host") == "other.test:81"
    # the recorded :authority is what plugins and the inspector see
    assert h.records() == []  # no plugins: no chain, no inspector records


def test_authority_is_what_plugins_see(start_proxy, probe):
    h = start_proxy(make_config(wasm_plugin("p", probe())))
    raw_exchange(h, b"GET /a HTTP/1.1\r\nHost: seen.test\r\n\r\n")
    rec = h.records()[-1]
    assert rec.authority == "seen.test"
    before = dict(rec.hops[0].request_headers_before)
    assert before[b":authority"] == b"seen.test"
    assert b"host" not in before


def test_x_forwarded_for_is_appended(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    with h.client() as c:
        c.get("/xff")
        assert hdr(upstream.requests[-1], "x-forwarded-for") == "127.0.0.1"
        c.get("/xff", headers={"x-forwarded-for": "10.0.0.1, 10.0.0.2"})
        assert hdr(upstream.requests[-1], "x-forwarded-for") == ("10.0.0.1, 10.0.0.2, 127.0.0.1")


def test_x_forwarded_for_with_several_header_lines_keeps_them_all(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    raw_exchange(
        h,
        b"GET /xff HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 10.0.0.1\r\n"
        b"x-forwarded-for: 10.0.0.2\r\n\r\n",
    )
    xff = hdr(upstream.requests[-1], "x-forwarded-for")
    hops = [a.strip() for a in xff.split(",")]
    assert hops == ["10.0.0.1", "10.0.0.2", "127.0.0.1"], xff


def test_x_request_id_generated_when_absent_and_kept_when_present(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    with h.client() as c:
        c.get("/rid")
        c.get("/rid")
        c.get("/rid", headers={"x-request-id": "my-id-123"})
    ids = [hdr(r, "x-request-id") for r in upstream.requests]
    assert UUID4.match(ids[0]) and UUID4.match(ids[1]), ids
    assert ids[0] != ids[1]
    assert ids[2] == "my-id-123"


def test_hop_by_hop_headers_are_not_forwarded(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    raw_exchange(
        h,
        b"GET /hop HTTP/1.1\r\nhost: x\r\nkeep-alive: timeout=5\r\nproxy-connection: x\r\n"
        b"x-keep: yes\r\n\r\n",
    )
    hdrs = {k.lower() for k in upstream.requests[-1]["headers"]}
    assert "keep-alive" not in hdrs and "proxy-connection" not in hdrs
    assert "x-keep" in hdrs


# -- pipelining, HEAD, 204 ---------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(start_proxy):
    h = start_proxy(make_config())  # demo upstream: /delay/MS
    data = (
        b"GET /delay/300 HTTP/1.1\r\nhost: x\r\n\r\n"
        b"POST /second HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
        b"GET /third HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    rs = raw_exchange(h, data, n=3)
    assert [r.status for r in rs] == [200, 200, 200]
    assert [_echo(r)["path"] for r in rs] == ["/delay/300", "/second", "/third"]
    assert _echo(rs[1])["body"] == "abc"


def test_head_gets_headers_only_and_the_connection_stays_usable(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        f = s.makefile("rb")
        s.sendall(b"HEAD /bytes/1234 HTTP/1.1\r\nhost: x\r\n\r\n")
        r = read_response(f, head=True)
        assert r.status == 200
        assert r.header("content-length") == "1234"
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nhost: x\r\n\r\n")
        r2 = read_response(f)
        assert r2.status == 200
        assert r2.body == b"x" * 10


def test_204_has_no_body_and_keeps_the_connection(start_proxy, scripted_upstream):
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        while (head := up.read_head(conn, buf)) is not None:
            if b"/empty" in head:
                conn.sendall(b"HTTP/1.1 204 No Content\r\nx-u: 1\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody")

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with connect(h) as s:
        f = s.makefile("rb")
        for _ in range(2):
            s.sendall(b"DELETE /empty HTTP/1.1\r\nhost: x\r\n\r\n")
            r = read_response(f)
            assert r.status == 204
            assert r.body == b""
            assert r.header("x-u") == "1"
            assert r.header("transfer-encoding") is None
            assert r.header("content-length") in (None, "0")
        s.sendall(b"GET /after HTTP/1.1\r\nhost: x\r\n\r\n")
        r = read_response(f)
        assert r.status == 200 and r.body == b"body"
    assert up.connections == 1  # the upstream connection was reused after the 204s


def test_demo_upstream_status_204_does_not_poison_the_pool(start_proxy):
    h = start_proxy(make_config())
    with h.client() as c:
        for path in ("/status/204", "/status/204", "/after", "/after"):
            r = c.get(path)
            assert r.status_code == (204 if "204" in path else 200), (path, r.text)
            if r.status_code == 204:
                assert r.content == b""


def test_demo_upstream_sends_no_body_on_204_304_and_head(start_proxy):
    """Straight to the demo upstream on one keep-alive connection: if a 204, a 304 or
    a HEAD answer carried a body, the next response would be read from its bytes."""
    h = start_proxy(make_config())
    demo = h.server.demo
    assert demo is not None
    with socket.create_connection((demo.host, demo.port), timeout=5) as s:
        f = s.makefile("rb")
        for method, path, status in (
            (b"GET", b"/status/204", 204),
            (b"GET", b"/status/304", 304),
            (b"HEAD", b"/anything", 200),
            (b"HEAD", b"/status/204", 204),
        ):
            s.sendall(b"%s %s HTTP/1.1\r\nhost: demo\r\n\r\n" % (method, path))
            r = read_response(f, head=method == b"HEAD")
            assert r.status == status, (method, path, r.status)
            assert r.reason != "OK" or status == 200
            if status in (204, 304):
                assert r.header("content-length") is None, (method, path)
            else:  # HEAD: the head still describes what a GET would get
                assert int(r.header("content-length") or "0") > 0
        # a body sent after any of them would now be read as this response's head
        s.sendall(b"GET /after HTTP/1.1\r\nhost: demo\r\n\r\n")
        r = read_response(f)
        assert r.status == 200
        assert _echo(r)["path"] == "/after"


# -- bad input (§6) ----------------------------------------------------------------------------


def test_malformed_request_line_gets_400_and_a_close(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        r = read_response(s.makefile("rb"))
        assert r.status == 400
        assert r.header("connection") == "close"
        assert is_closed(s)
    # the server keeps serving
    with h.client() as c:
        assert c.get("/ok").status_code == 200


def test_malformed_content_length_gets_400(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        s.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n")
        r = read_response(s.makefile("rb"))
        assert r.status == 400
        assert is_closed(s)
    with h.client() as c:
        assert c.get("/ok").status_code == 200


def test_requests_refused_as_malformed_are_counted_as_4xx(start_proxy):
    """A request the data path answers 400 after its head was parsed (a bad target, bad
    chunking) is a started and finished request with status 400, not a status-0 one."""
    h = start_proxy(make_config())
    for data in (
        b"GET http://[bad/x HTTP/1.1\r\nhost: x\r\n\r\n",
        b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\n",
    ):
        with connect(h) as s:
            s.sendall(data)
            assert read_response(s.makefile("rb")).status == 400
            assert is_closed(s)
    h.wait_for(lambda: h.sync(lambda: h.server.active_requests) == 0, what="request ends")
    st = h.stats()
    assert st["http.downstream_rq_total"] == 2
    assert st["http.downstream_rq_4xx"] == 2
    assert st["http.downstream_rq_active"] == 0


def test_malformed_chunked_body_gets_400_and_a_close(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        s.sendall(b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\n")
        r = read_response(s.makefile("rb"))
        assert r.status == 400
        assert is_closed(s)


def test_malformed_absolute_form_target_gets_400(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        s.sendall(b"GET http://[bad/x HTTP/1.1\r\nhost: x\r\n\r\n")
        r = read_response(s.makefile("rb"))
        assert r.status == 400


def test_bad_request_target_does_not_corrupt_the_active_request_gauge(start_proxy):
    h = start_proxy(make_config())
    with connect(h) as s:
        s.sendall(b"GET http://[bad/x HTTP/1.1\r\nhost: x\r\n\r\n")
        assert is_closed(s)
    with h.client() as c:
        assert c.get("/ok").status_code == 200
    st = h.stats()
    assert st["http.downstream_rq_active"] == 0
    assert h.sync(lambda: h.server.active_requests) == 0


def test_header_block_over_64_kib_gets_431(start_proxy):
    h = start_proxy(make_config())
    big = b"x-big: " + b"a" * (70 * 1024) + b"\r\n"
    with connect(h) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n" + big + b"\r\n")
        r = read_response(s.makefile("rb"))
        assert r.status == 431
        assert is_closed(s)
    # many small headers adding up to more than 64 KiB too
    many = b"".join(b"x-h%d: %s\r\n" % (i, b"b" * 100) for i in range(700))
    with connect(h) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
        r = read_response(s.makefile("rb"))
        assert r.status == 431
    with h.client() as c:
        assert c.get("/ok").status_code == 200


def test_header_block_just_under_64_kib_is_served(start_proxy):
    h = start_proxy(make_config())
    ok = b"x-ok: " + b"c" * (60 * 1024) + b"\r\n"
    (r,) = raw_exchange(h, b"GET /fine HTTP/1.1\r\nhost: x\r\n" + ok + b"\r\n")
    assert r.status == 200
    assert len(_echo(r)["headers"]["x-ok"]) == 60 * 1024


def test_upstream_refused_gets_503_with_a_clear_body(start_proxy):
    h = start_proxy(make_config(clusters={"dead": f"http://127.0.0.1:{free_port()}"}))
    with h.client() as c:
        r = c.get("/x")
        assert r.status_code == 503
        assert "upstream connect error" in r.text
        assert "connection failure" in r.text or "refused" in r.text.lower()
        # again on the same client connection: the proxy did not close it
        assert c.get("/y").status_code == 503
    st = h.stats()
    assert st["cluster.dead.upstream_rq_error"] == 2
    assert st["http.downstream_rq_5xx"] == 2


def test_upstream_timeout_gets_504(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"slow": (upstream.url, "200ms")}))
    with h.client() as c:
        t0 = time.monotonic()
        r = c.get("/slow?ms=600")
        took = time.monotonic() - t0
        assert r.status_code == 504
        assert "timeout" in r.text
        assert took < 0.5
        # the next request is served normally
        assert c.get("/fast").status_code == 200
    assert h.stats()["cluster.slow.upstream_rq_error"] == 1
    # let the abandoned upstream handler finish inside this test (its broken pipe is noise)
    time.sleep(max(0.0, 0.75 - (time.monotonic() - t0)))


def test_upstream_closing_without_a_response_gets_503(start_proxy, scripted_upstream):
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        up.read_head(conn, buf)
        conn.close()

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with h.client() as c:
        r = c.get("/x")
    assert r.status_code == 503
    assert "reset" in r.text or "disconnect" in r.text


def test_client_disconnect_mid_body_leaks_no_context(start_proxy, probe):
    """The client sends part of a body and goes away: every plugin context still gets
    done/log/delete (the probe counts its on_delete) and nothing stays in the VM."""
    cfg = make_config(
        wasm_plugin("p", probe()),
        wasm_plugin("counter", plugin("path_counter"), root_id="path_counter"),  # buffers
    )
    h = start_proxy(cfg)
    for _ in range(3):
        with connect(h) as s:
            s.sendall(b"POST /partial HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n")
            s.sendall(b"only-a-bit")
            h.wait_for(lambda: h.sync(lambda: h.server.active_requests) == 1)
    h.wait_for(lambda: h.stats().get("probe.p.deletes") == 3, what="3 on_delete calls")
    st = h.stats()
    assert st["probe.p.dones"] == 3
    assert st["http.downstream_rq_active"] == 0

    def leftover() -> dict[str, list[int]]:
        out = {}
        for name, slot in h.server.manager.slots.items():
            vm = slot.instance.vm
            out[name] = sorted(cid for cid, c in vm.contexts.items() if c.kind != "root")
        return out

    assert h.sync(leftover) == {"p": [], "counter": []}
    recs = h.records()
    assert [r.outcome for r in recs] == ["client_disconnect"] * 3
    for rec in recs:
        names = [n for hop in rec.hops for n, _r, _us in hop.callbacks]
        assert "proxy_on_done" in names and "proxy_on_delete" in names
    with h.client() as c:
        assert c.get("/still-serving").status_code == 200


def test_client_disconnect_while_paused_in_a_callout(start_proxy, upstream):
    """The stream is paused waiting for an http_call when the client leaves: the
    context is deleted and the late callout response is dropped safely."""
    cfg = make_config(
        wasm_plugin(
            "callout",
            plugin("callout"),
            root_id="callout",
            config={"cluster": "auth", "path": "/slow?ms=400", "timeout_ms": 3000},
        ),
        clusters={"auth": upstream.url},
    )
    h = start_proxy(cfg)
    with connect(h) as s:
        s.sendall(b"GET /gone HTTP/1.1\r\nhost: x\r\n\r\n")
        h.wait_for(lambda: h.stats().get("wasm.paused_streams") == 1, what="the pause")
    h.wait_for(lambda: h.sync(lambda: h.server.active_requests) == 0, what="request end")
    h.wait_for(
        lambda: any("is gone" in r.message for _s, r in h.server.logs),
        timeout=5,
        what="the dropped callout response",
    )
    vm = h.slot("callout").instance.vm
    assert h.sync(lambda: [c for c in vm.contexts.values() if c.kind != "root"]) == []
    assert h.stats()["wasm.paused_streams"] == 0
    assert h.slot("callout").state == "running"
    with h.client() as c:
        r = c.get("/after", headers={"authorization": "Bearer x"})
        assert r.status_code == 200


def test_many_bad_clients_do_not_stop_serve(start_proxy):
    h = start_proxy(make_config())
    payloads = [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\n",
        b"GET /",  # then close mid-request-line
    ]
    for p in payloads:
        with connect(h) as s:
            s.sendall(p)
            if p != b"GET /":
                assert is_closed(s)
    with h.client() as c:
        assert c.get("/ok").status_code == 200


def test_concurrent_clients(start_proxy, upstream):
    h = start_proxy(make_config(clusters={"backend": upstream.url}))
    results: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with h.client() as c:
            for j in range(10):
                r = c.get(f"/c{i}/{j}")
                with lock:
                    results.append(r.status_code)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == [200] * 50
    assert h.stats()["http.downstream_rq_2xx"] == 50


def test_config_text_helper_round_trips():
    # sanity of the test helper itself: the YAML parses with ephemeral ports
    text = config_text(clusters={"a": "http://127.0.0.1:1"})
    assert "127.0.0.1:0" in text


def test_response_delimited_by_connection_close(start_proxy, scripted_upstream):
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n")
        conn.sendall(b"body-until-")
        time.sleep(0.05)
        conn.sendall(b"eof")
        conn.shutdown(socket.SHUT_WR)

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with h.client() as c:
        r = c.get("/eof")
        assert r.status_code == 200
        assert r.content == b"body-until-eof"


def test_upstream_closing_an_idle_pooled_connection(start_proxy, scripted_upstream):
    """The upstream closes a keep-alive connection while it sits in the pool: the next
    request gets a new connection, not an error."""

    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        time.sleep(0.05)

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with h.client() as c:
        for _ in range(3):
            r = c.get("/i")
            assert r.status_code == 200 and r.text == "ok"
            time.sleep(0.15)
    assert up.connections == 3


def test_malformed_upstream_response_gets_502(start_proxy, scripted_upstream):
    def script(conn: socket.socket, up: ScriptedUpstream) -> None:
        buf = bytearray()
        if up.read_head(conn, buf) is None:
            return
        conn.sendall(b"SPAM SPAM SPAM\r\n\r\n")

    up = scripted_upstream(script)
    h = start_proxy(make_config(clusters={"backend": up.url}))
    with h.client() as c:
        r = c.get("/m")
        assert r.status_code == 502
        assert "malformed" in r.text
        assert c.get("/m").status_code == 502  # the client connection stays usable
    assert h.stats()["cluster.backend.upstream_rq_error"] == 2
