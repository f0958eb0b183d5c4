/*
 * grpc_client.c -- an HTTP filter that makes gRPC callouts from its request headers, for
 * the gRPC transport tests (tests/host/proxy/test_grpc_plugin.py). See README.md.
 *
 * Configuration: the upstream, as raw text or as pluginConfig {"upstream": "..."}.
 * "envoy:<cluster>" makes the plugin send a serialized
 * envoy.config.core.v3.GrpcService{envoy_grpc{cluster_name}} (what the C++ SDK sends);
 * anything else is sent as a plain cluster name (the Rust and Go SDKs). Every call
 * carries the initial metadata "x-plugin: grpc_client". The request header x-grpc-mode
 * chooses what the request does (x-grpc-msg is the message, x-grpc-timeout-ms the
 * unary timeout, default 1000):
 *
 *  - "unary" (default): test.Echo/Unary; the request pauses; the reply resumes it with
 *    request header x-grpc-reply: <reply>; a failure (proxy_on_grpc_close) answers a
 *    local 503 with body "grpc <status>: <message>" and header x-grpc-status;
 *  - "stream": test.Echo/Chat; sends the message, half-closes (proxy_grpc_close) and
 *    resumes at proxy_on_grpc_close with x-grpc-initial (the x-srv initial metadata
 *    value), x-grpc-replies (messages joined by ','), x-grpc-trailers (how many
 *    trailing metadata entries), x-grpc-status (the close status);
 *  - "cancel": test.Echo/Chat; sends the message and cancels the stream inside
 *    proxy_on_grpc_receive_initial_metadata, resuming with x-grpc-cancelled: <status of
 *    proxy_grpc_cancel>.
 *
 * A start that fails answers a local 500 "grpc start: <status name>". A callback for a
 * call the plugin does not know (e.g. after it cancelled it) logs the error
 * "grpc_client: callback for unknown token <t>" -- the tests look for that line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_util.h"
#include "proxy_abi.h"

PROXY_EXPORT(proxy_abi_version_0_2_1) void grpc_client_abi_version(void) {}

PROXY_EXPORT(malloc) void *grpc_client_malloc(uint32_t size) { return malloc(size ? size : 1); }

__attribute__((format(printf, 2, 3))) static void log_at(uint32_t level, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = (int)sizeof buf - 1;
    proxy_log(level, buf, (uint32_t)n);
}

enum { MODE_UNARY = 1, MODE_STREAM = 2, MODE_CANCEL = 3 };

static char upstream[256];
static uint32_t upstream_len;

/* -- the calls in flight: token -> (stream context, mode, what arrived) -------------------- */

#define MAX_CALLS 64

struct call {
    uint32_t token;
    uint32_t context_id;
    int mode;
    char initial[64];
    char replies[256];
    uint32_t trailers;
};

static struct call calls[MAX_CALLS];

static struct call *call_new(uint32_t token, uint32_t context_id, int mode) {
    for (int i = 0; i < MAX_CALLS; i++) {
        if (calls[i].token == 0) {
            memset(&calls[i], 0, sizeof calls[i]);
            calls[i].token = token;
            calls[i].context_id = context_id;
            calls[i].mode = mode;
            return &calls[i];
        }
    }
    return NULL;
}

static struct call *call_find(uint32_t token) {
    for (int i = 0; i < MAX_CALLS; i++)
        if (token != 0 && calls[i].token == token)
            return &calls[i];
    log_at(LL_ERROR, "grpc_client: callback for unknown token %u", token);
    return NULL;
}

/* -- small helpers --------------------------------------------------------------------------- */

static void header(const char *name, char *out, uint32_t out_size) {
    char *ptr = NULL;
    uint32_t size = 0;
    out[0] = 0;
    if (proxy_get_header_map_value(MAP_HTTP_REQUEST_HEADERS, name, (uint32_t)strlen(name), &ptr,
                                   &size) == 0 && ptr != NULL) {
        copy_str(out, out_size, ptr, size);
        free(ptr);
    }
}

static void add_header(const char *name, const char *value) {
    proxy_add_header_map_value(MAP_HTTP_REQUEST_HEADERS, name, (uint32_t)strlen(name), value,
                               (uint32_t)strlen(value));
}

static void local_reply(uint32_t code, const char *body, int32_t grpc_status) {
    char status[16];
    snprintf(status, sizeof status, "%d", grpc_status);
    const char *kv[] = {"x-grpc-status", status};
    uint32_t hlen = 0;
    char *headers = pairs_encode(kv, 1, &hlen);
    proxy_send_local_response(code, "grpc_client", 11, body, (uint32_t)strlen(body), headers,
                              hlen, -1);
    free(headers);
}

/* GrpcService{envoy_grpc (1) {cluster_name (1)}}: the C++ SDK's upstream form. */
static uint32_t grpc_service(const char *cluster, uint32_t len, char *out) {
    out[0] = 0x0a; /* field 1, length-delimited */
    out[1] = (char)(len + 2);
    out[2] = 0x0a;
    out[3] = (char)len;
    memcpy(out + 4, cluster, len);
    return len + 4;
}

/* -- root ------------------------------------------------------------------------------------ */

PROXY_EXPORT(proxy_on_context_create) void on_context_create(uint32_t id, uint32_t parent) {
    (void)id;
    (void)parent;
}

PROXY_EXPORT(proxy_on_vm_start) uint32_t on_vm_start(uint32_t id, uint32_t size) {
    (void)id;
    (void)size;
    return 1;
}

PROXY_EXPORT(proxy_on_configure) uint32_t on_configure(uint32_t id, uint32_t size) {
    (void)id;
    char *ptr = NULL;
    uint32_t len = 0;
    if (size == 0 || proxy_get_buffer_bytes(BUF_PLUGIN_CONFIGURATION, 0, size, &ptr, &len) != 0)
        return 0;
    char text[200];
    if (len > 0 && ptr[0] == '{') { /* pluginConfig (JSON): {"upstream": "..."} */
        if (!json_string_field(ptr, len, "upstream", text, sizeof text))
            text[0] = 0;
    } else {
        copy_str(text, sizeof text, ptr, len);
    }
    free(ptr);
    uint32_t tl = (uint32_t)strlen(text);
    if (tl > 6 && memcmp(text, "envoy:", 6) == 0) {
        upstream_len = grpc_service(text + 6, tl - 6, upstream);
    } else {
        upstream_len = tl;
        memcpy(upstream, text, tl);
    }
    log_at(LL_INFO, "grpc_client: upstream of %u bytes", upstream_len);
    return 1;
}

PROXY_EXPORT(proxy_on_done) uint32_t on_done(uint32_t id) {
    (void)id;
    return 1;
}

PROXY_EXPORT(proxy_on_delete) void on_delete(uint32_t id) { (void)id; }

/* -- the request ------------------------------------------------------------------------------ */

PROXY_EXPORT(proxy_on_request_headers)
uint32_t on_request_headers(uint32_t id, uint32_t n, uint32_t eos) {
    (void)n;
    (void)eos;
    char mode_s[16], msg[128], timeout_s[16];
    header("x-grpc-mode", mode_s, sizeof mode_s);
    header("x-grpc-msg", msg, sizeof msg);
    header("x-grpc-timeout-ms", timeout_s, sizeof timeout_s);
    int mode = strcmp(mode_s, "stream") == 0   ? MODE_STREAM
               : strcmp(mode_s, "cancel") == 0 ? MODE_CANCEL
                                               : MODE_UNARY;
    uint32_t timeout = timeout_s[0] ? (uint32_t)strtoul(timeout_s, NULL, 10) : 1000;
    const char *kv[] = {"x-plugin", "grpc_client"};
    uint32_t md_len = 0;
    char *md = pairs_encode(kv, 1, &md_len);
    uint32_t token = 0, rc;
    if (mode == MODE_UNARY) {
        rc = proxy_grpc_call(upstream, upstream_len, "test.Echo", 9, "Unary", 5, md, md_len, msg,
                             (uint32_t)strlen(msg), timeout, &token);
    } else {
        rc = proxy_grpc_stream(upstream, upstream_len, "test.Echo", 9, "Chat", 4, md, md_len,
                               &token);
        if (rc == 0)
            rc = proxy_grpc_send(token, msg, (uint32_t)strlen(msg), 0);
        if (rc == 0 && mode == MODE_STREAM)
            rc = proxy_grpc_close(token); /* half-close: the replies still arrive */
    }
    free(md);
    if (rc != 0) {
        char body[64];
        snprintf(body, sizeof body, "grpc start: %s", status_name(rc));
        local_reply(500, body, -1);
        return 1;
    }
    if (call_new(token, id, mode) == NULL) {
        proxy_grpc_cancel(token);
        return 0;
    }
    return 1; /* Pause until the call answers */
}

/* -- gRPC callbacks (root context id, token, ...) ------------------------------------------- */

static void resume(struct call *c) {
    proxy_set_effective_context(c->context_id);
    proxy_continue_stream(STREAM_HTTP_REQUEST);
    c->token = 0;
}

PROXY_EXPORT(proxy_on_grpc_receive_initial_metadata)
void on_grpc_initial(uint32_t root, uint32_t token, uint32_t n) {
    (void)root;
    (void)n;
    struct call *c = call_find(token);
    if (c == NULL)
        return;
    char *ptr = NULL;
    uint32_t size = 0;
    if (proxy_get_header_map_value(MAP_GRPC_CALL_INITIAL_METADATA, "x-srv", 5, &ptr, &size) == 0 && ptr) {
        copy_str(c->initial, sizeof c->initial, ptr, size);
        free(ptr);
    }
    if (c->mode == MODE_CANCEL) {
        char status[16];
        snprintf(status, sizeof status, "%u", proxy_grpc_cancel(token));
        proxy_set_effective_context(c->context_id);
        add_header("x-grpc-cancelled", status);
        resume(c);
    }
}

PROXY_EXPORT(proxy_on_grpc_receive) void on_grpc_receive(uint32_t root, uint32_t token,
                                                         uint32_t size) {
    (void)root;
    struct call *c = call_find(token);
    if (c == NULL)
        return;
    char *ptr = NULL;
    uint32_t len = 0;
    char msg[128] = "";
    if (proxy_get_buffer_bytes(BUF_GRPC_CALL_MESSAGE, 0, size, &ptr, &len) == 0 && ptr) {
        copy_str(msg, sizeof msg, ptr, len);
        free(ptr);
    }
    if (c->mode == MODE_UNARY) {
        proxy_set_effective_context(c->context_id);
        add_header("x-grpc-reply", msg);
        resume(c);
        return;
    }
    size_t used = strlen(c->replies);
    snprintf(c->replies + used, sizeof c->replies - used, "%s%s", used ? "," : "", msg);
}

PROXY_EXPORT(proxy_on_grpc_receive_trailing_metadata)
void on_grpc_trailing(uint32_t root, uint32_t token, uint32_t n) {
    (void)root;
    struct call *c = call_find(token);
    if (c != NULL)
        c->trailers = n;
}

PROXY_EXPORT(proxy_on_grpc_close) void on_grpc_close(uint32_t root, uint32_t token,
                                                     uint32_t status) {
    (void)root;
    struct call *c = call_find(token);
    if (c == NULL)
        return;
    uint32_t code = 0;
    char *ptr = NULL;
    uint32_t len = 0;
    char message[128] = "";
    if (proxy_get_status(&code, &ptr, &len) == 0 && ptr) {
        copy_str(message, sizeof message, ptr, len);
        free(ptr);
    }
    proxy_set_effective_context(c->context_id);
    if (c->mode == MODE_UNARY) {
        char body[200];
        snprintf(body, sizeof body, "grpc %u: %s", status, message);
        local_reply(503, body, (int32_t)code);
        c->token = 0;
        return;
    }
    char buf[16];
    add_header("x-grpc-initial", c->initial);
    add_header("x-grpc-replies", c->replies);
    snprintf(buf, sizeof buf, "%u", c->trailers);
    add_header("x-grpc-trailers", buf);
    snprintf(buf, sizeof buf, "%u", status);
    add_header("x-grpc-status", buf);
    resume(c);
}
