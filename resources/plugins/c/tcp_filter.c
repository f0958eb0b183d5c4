/*
 * tcp_filter.c -- a network (TCP) filter for the TCP proxy tests
 * (tests/host/proxy/test_tcp*.py) and `wasmdesk try --tcp`. See README.md.
 *
 * Configuration: a flat JSON object of strings (pluginConfig); every key is optional:
 *
 *  - "upper": "downstream" upper-cases the downstream data (client -> upstream);
 *  - "down_append": TEXT appends TEXT to every non-empty downstream chunk;
 *  - "up_append": TEXT appends TEXT to every non-empty upstream chunk (upstream -> client);
 *  - "close_marker": TEXT closes the connection (proxy_close_stream(DOWNSTREAM)) when a
 *    downstream chunk contains TEXT;
 *  - "hold": "data" pauses every downstream chunk (the host keeps buffering it) until the
 *    next tick, which continues it (proxy_continue_stream(DOWNSTREAM) after
 *    proxy_set_effective_context); "connection" pauses proxy_on_new_connection the same way.
 *    The tick period is 20 ms.
 *  - "authz": CLUSTER holds each new connection and asks CLUSTER (proxy_http_call, GET
 *    /check, header x-client: the source.address property); a 200 continues the
 *    connection, any other answer (or a failed call) closes it (an ext-authz style
 *    network filter). Logs "authz <id> status=<code>".
 *
 * It counts the bytes of each direction per connection and in two counters
 * ("tcp_filter.downstream_bytes", "tcp_filter.upstream_bytes"), and logs (info):
 * "new connection <id>", "downstream eos <id>", "upstream close <id> peer=<p>",
 * "downstream close <id> peer=<p> down=<n> up=<m>", "continue <id> status=<s>".
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_util.h"
#include "proxy_abi.h"

PROXY_EXPORT(proxy_abi_version_0_2_1) void tcp_filter_abi_version(void) {}

PROXY_EXPORT(malloc) void *tcp_filter_malloc(uint32_t size) { return malloc(size ? size : 1); }

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

static int upper_down;
static char down_append[64];
static char up_append[64];
static char close_marker[64];
static char hold[16];
static char authz[64];
static uint32_t metric_down, metric_up;

static int contains(const char *hay, uint32_t len, const char *needle) {
    uint32_t n = (uint32_t)strlen(needle);
    for (uint32_t i = 0; n > 0 && i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return 1;
    return 0;
}

/* -- per connection state: context id -> byte counts, held ------------------------------ */

#define MAX_CONNS 256

struct conn {
    uint32_t id;
    uint64_t down, up;
    int held; /* paused until the next tick */
    uint32_t token; /* the authz call in flight */
};

static struct conn conns[MAX_CONNS];

static struct conn *conn_get(uint32_t id) {
    struct conn *free_slot = NULL;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (conns[i].id == id)
            return &conns[i];
        if (conns[i].id == 0 && free_slot == NULL)
            free_slot = &conns[i];
    }
    if (free_slot != NULL) {
        memset(free_slot, 0, sizeof *free_slot);
        free_slot->id = id;
    }
    return free_slot;
}

/* -- root ------------------------------------------------------------------------------- */

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
    if (size > 0 && proxy_get_buffer_bytes(BUF_PLUGIN_CONFIGURATION, 0, size, &ptr, &len) == 0) {
        char value[16];
        upper_down = json_string_field(ptr, len, "upper", value, sizeof value) &&
                     strcmp(value, "downstream") == 0;
        json_string_field(ptr, len, "down_append", down_append, sizeof down_append);
        json_string_field(ptr, len, "up_append", up_append, sizeof up_append);
        json_string_field(ptr, len, "close_marker", close_marker, sizeof close_marker);
        json_string_field(ptr, len, "hold", hold, sizeof hold);
        json_string_field(ptr, len, "authz", authz, sizeof authz);
        free(ptr);
    }
    proxy_define_metric(METRIC_COUNTER, "tcp_filter.downstream_bytes", 27, &metric_down);
    proxy_define_metric(METRIC_COUNTER, "tcp_filter.upstream_bytes", 25, &metric_up);
    if (hold[0])
        proxy_set_tick_period_milliseconds(20);
    return 1;
}

PROXY_EXPORT(proxy_on_tick) void on_tick(uint32_t root_id) {
    (void)root_id;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (conns[i].id == 0 || !conns[i].held)
            continue;
        conns[i].held = 0;
        uint32_t s = proxy_set_effective_context(conns[i].id);
        if (s == PS_OK)
            s = proxy_continue_stream(STREAM_DOWNSTREAM);
        log_at(LL_INFO, "continue %u status=%s", conns[i].id, status_name(s));
    }
}

/* -- connection ------------------------------------------------------------------------- */

static uint32_t ask_authz(uint32_t id, struct conn *c) {
    char *src = NULL;
    uint32_t src_len = 0;
    char client[64] = "";
    if (proxy_get_property("source\0address", 14, &src, &src_len) == PS_OK && src != NULL) {
        copy_str(client, sizeof client, src, src_len);
        free(src);
    }
    const char *kv[] = {":method", "GET", ":path", "/check", ":authority", authz,
                        "x-client", client};
    uint32_t hlen = 0;
    char *headers = pairs_encode(kv, 4, &hlen);
    uint32_t s = proxy_http_call(authz, (uint32_t)strlen(authz), headers, hlen, NULL, 0, NULL, 0,
                                 1000, &c->token);
    free(headers);
    if (s != PS_OK) {
        log_at(LL_WARN, "authz %u call failed to start: %s", id, status_name(s));
        proxy_close_stream(STREAM_DOWNSTREAM);
        return ACTION_CONTINUE;
    }
    return ACTION_PAUSE;
}

PROXY_EXPORT(proxy_on_http_call_response) void on_http_call_response(uint32_t root_id,
                                                                     uint32_t token,
                                                                     uint32_t nheaders,
                                                                     uint32_t body_size,
                                                                     uint32_t ntrailers) {
    (void)root_id;
    (void)body_size;
    (void)ntrailers;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (conns[i].id == 0 || conns[i].token != token)
            continue;
        conns[i].token = 0;
        char code[8] = "none";
        char *v = NULL;
        uint32_t vlen = 0;
        if (nheaders > 0 &&
            proxy_get_header_map_value(MAP_HTTP_CALL_RESPONSE_HEADERS, ":status", 7, &v,
                                       &vlen) == PS_OK && v != NULL) {
            copy_str(code, sizeof code, v, vlen);
            free(v);
        }
        log_at(LL_INFO, "authz %u status=%s", conns[i].id, code);
        if (proxy_set_effective_context(conns[i].id) != PS_OK)
            return;
        if (strcmp(code, "200") == 0)
            proxy_continue_stream(STREAM_DOWNSTREAM);
        else
            proxy_close_stream(STREAM_DOWNSTREAM);
        return;
    }
}

PROXY_EXPORT(proxy_on_new_connection) uint32_t on_new_connection(uint32_t id) {
    struct conn *c = conn_get(id);
    log_at(LL_INFO, "new connection %u", id);
    if (c != NULL && authz[0])
        return ask_authz(id, c);
    if (c != NULL && strcmp(hold, "connection") == 0) {
        c->held = 1;
        return ACTION_PAUSE;
    }
    return ACTION_CONTINUE;
}

/* Append text to the current data buffer of `type`. */
static void append(uint32_t type, uint32_t size, const char *text) {
    proxy_set_buffer_bytes(type, size, 0, text, (uint32_t)strlen(text));
}

PROXY_EXPORT(proxy_on_downstream_data) uint32_t on_downstream_data(uint32_t id, uint32_t size,
                                                                   uint32_t eos) {
    struct conn *c = conn_get(id);
    if (eos)
        log_at(LL_INFO, "downstream eos %u", id);
    if (size > 0) {
        char *ptr = NULL;
        uint32_t len = 0;
        if (proxy_get_buffer_bytes(BUF_DOWNSTREAM_DATA, 0, size, &ptr, &len) != PS_OK)
            return ACTION_CONTINUE;
        if (c != NULL && !c->held)
            c->down += len;
        proxy_increment_metric(metric_down, (int64_t)len);
        int close = close_marker[0] && ptr != NULL &&
                    contains(ptr, len, close_marker);
        if (upper_down && ptr != NULL) {
            for (uint32_t i = 0; i < len; i++)
                ptr[i] = (char)toupper((unsigned char)ptr[i]);
            proxy_set_buffer_bytes(BUF_DOWNSTREAM_DATA, 0, len, ptr, len);
        }
        free(ptr);
        if (close) {
            log_at(LL_INFO, "close marker on %u", id);
            proxy_close_stream(STREAM_DOWNSTREAM);
            return ACTION_CONTINUE;
        }
        if (strcmp(hold, "data") == 0 && c != NULL) {
            c->held = 1;
            return ACTION_PAUSE;
        }
        if (down_append[0])
            append(BUF_DOWNSTREAM_DATA, len, down_append);
    }
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_upstream_data) uint32_t on_upstream_data(uint32_t id, uint32_t size,
                                                               uint32_t eos) {
    (void)eos;
    struct conn *c = conn_get(id);
    if (c != NULL)
        c->up += size;
    proxy_increment_metric(metric_up, (int64_t)size);
    if (size > 0 && up_append[0])
        append(BUF_UPSTREAM_DATA, size, up_append);
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_upstream_connection_close) void on_upstream_close(uint32_t id,
                                                                        uint32_t peer) {
    log_at(LL_INFO, "upstream close %u peer=%u", id, peer);
}

PROXY_EXPORT(proxy_on_downstream_connection_close) void on_downstream_close(uint32_t id,
                                                                            uint32_t peer) {
    struct conn *c = conn_get(id);
    log_at(LL_INFO, "downstream close %u peer=%u down=%llu up=%llu", id, peer,
           c != NULL ? (unsigned long long)c->down : 0ULL,
           c != NULL ? (unsigned long long)c->up : 0ULL);
}

PROXY_EXPORT(proxy_on_done) uint32_t on_done(uint32_t id) {
    (void)id;
    return 1;
}

PROXY_EXPORT(proxy_on_delete) void on_delete(uint32_t id) {
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].id == id)
            memset(&conns[i], 0, sizeof conns[i]);
}
