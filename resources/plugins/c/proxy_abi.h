/*
 * proxy_abi.h -- the Proxy-Wasm host interface (ABI 0.2.0 / 0.2.1) as seen from a C plugin.
 *
 * Our own declarations, written from /work/shared/docs/proxy-wasm-abi.md (section 2.1 for the
 * signatures, section 4 for the numbers). Every host function is imported from module "env"
 * and returns a proxy status (uint32_t), except where noted. Pointers and sizes are 32-bit;
 * out-parameters ("ret_*") are addresses the host writes little-endian values into.
 *
 * Only what a plugin declares and calls becomes an import of the module (the linker drops
 * unused declarations), so listing the whole ABI here costs nothing.
 */
#ifndef WASMDESK_PROXY_ABI_H
#define WASMDESK_PROXY_ABI_H

#include <stdint.h>

#define PROXY_IMPORT(name) __attribute__((import_module("env"), import_name(#name)))
#define PROXY_EXPORT(name) __attribute__((export_name(#name)))

/* -- enums (ABI doc section 4) ---------------------------------------------------------- */

enum proxy_status {
    PS_OK = 0,
    PS_NOT_FOUND = 1,
    PS_BAD_ARGUMENT = 2,
    PS_SERIALIZATION_FAILURE = 3,
    PS_PARSE_FAILURE = 4,
    PS_BAD_EXPRESSION = 5,
    PS_INVALID_MEMORY_ACCESS = 6,
    PS_EMPTY = 7,
    PS_CAS_MISMATCH = 8,
    PS_RESULT_MISMATCH = 9,
    PS_INTERNAL_FAILURE = 10,
    PS_BROKEN_CONNECTION = 11,
    PS_UNIMPLEMENTED = 12,
};

enum proxy_log_level {
    LL_TRACE = 0,
    LL_DEBUG = 1,
    LL_INFO = 2,
    LL_WARN = 3,
    LL_ERROR = 4,
    LL_CRITICAL = 5,
};

enum proxy_map_type {
    MAP_HTTP_REQUEST_HEADERS = 0,
    MAP_HTTP_REQUEST_TRAILERS = 1,
    MAP_HTTP_RESPONSE_HEADERS = 2,
    MAP_HTTP_RESPONSE_TRAILERS = 3,
    MAP_GRPC_CALL_INITIAL_METADATA = 4,
    MAP_GRPC_CALL_TRAILING_METADATA = 5,
    MAP_HTTP_CALL_RESPONSE_HEADERS = 6,
    MAP_HTTP_CALL_RESPONSE_TRAILERS = 7,
};

enum proxy_buffer_type {
    BUF_HTTP_REQUEST_BODY = 0,
    BUF_HTTP_RESPONSE_BODY = 1,
    BUF_DOWNSTREAM_DATA = 2,
    BUF_UPSTREAM_DATA = 3,
    BUF_HTTP_CALL_RESPONSE_BODY = 4,
    BUF_GRPC_CALL_MESSAGE = 5,
    BUF_VM_CONFIGURATION = 6,
    BUF_PLUGIN_CONFIGURATION = 7,
    BUF_FOREIGN_FUNCTION_ARGUMENTS = 8,
};

enum proxy_stream_type {
    STREAM_HTTP_REQUEST = 0,
    STREAM_HTTP_RESPONSE = 1,
    STREAM_DOWNSTREAM = 2,
    STREAM_UPSTREAM = 3,
};

enum proxy_metric_type {
    METRIC_COUNTER = 0,
    METRIC_GAUGE = 1,
    METRIC_HISTOGRAM = 2,
};

/* What Rust and Go SDK callbacks return (proxy_action_t). */
enum proxy_action {
    ACTION_CONTINUE = 0,
    ACTION_PAUSE = 1,
};

/* -- host functions (ABI doc section 2.1) ------------------------------------------------ */

/* logging and time */
PROXY_IMPORT(proxy_log)
uint32_t proxy_log(uint32_t level, const char *msg, uint32_t msg_len);
PROXY_IMPORT(proxy_get_log_level)
uint32_t proxy_get_log_level(uint32_t *ret_level);
PROXY_IMPORT(proxy_get_current_time_nanoseconds)
uint32_t proxy_get_current_time_nanoseconds(uint64_t *ret_time);
PROXY_IMPORT(proxy_set_tick_period_milliseconds)
uint32_t proxy_set_tick_period_milliseconds(uint32_t period_ms);

/* buffers */
PROXY_IMPORT(proxy_get_buffer_bytes)
uint32_t proxy_get_buffer_bytes(uint32_t buffer_type, uint32_t start, uint32_t max_size,
                                char **ret_ptr, uint32_t *ret_size);
PROXY_IMPORT(proxy_set_buffer_bytes)
uint32_t proxy_set_buffer_bytes(uint32_t buffer_type, uint32_t start, uint32_t size,
                                const char *data, uint32_t data_len);
PROXY_IMPORT(proxy_get_buffer_status)
uint32_t proxy_get_buffer_status(uint32_t buffer_type, uint32_t *ret_len, uint32_t *ret_flags);

/* header / trailer / metadata maps */
PROXY_IMPORT(proxy_get_header_map_pairs)
uint32_t proxy_get_header_map_pairs(uint32_t map_type, char **ret_ptr, uint32_t *ret_size);
PROXY_IMPORT(proxy_set_header_map_pairs)
uint32_t proxy_set_header_map_pairs(uint32_t map_type, const char *pairs, uint32_t pairs_len);
PROXY_IMPORT(proxy_get_header_map_value)
uint32_t proxy_get_header_map_value(uint32_t map_type, const char *key, uint32_t key_len,
                                    char **ret_ptr, uint32_t *ret_size);
PROXY_IMPORT(proxy_add_header_map_value)
uint32_t proxy_add_header_map_value(uint32_t map_type, const char *key, uint32_t key_len,
                                    const char *value, uint32_t value_len);
PROXY_IMPORT(proxy_replace_header_map_value)
uint32_t proxy_replace_header_map_value(uint32_t map_type, const char *key, uint32_t key_len,
                                        const char *value, uint32_t value_len);
PROXY_IMPORT(proxy_remove_header_map_value)
uint32_t proxy_remove_header_map_value(uint32_t map_type, const char *key, uint32_t key_len);
PROXY_IMPORT(proxy_get_header_map_size)
uint32_t proxy_get_header_map_size(uint32_t map_type, uint32_t *ret_size);

/* properties */
PROXY_IMPORT(proxy_get_property)
uint32_t proxy_get_property(const char *path, uint32_t path_len, char **ret_ptr,
                            uint32_t *ret_size);
PROXY_IMPORT(proxy_set_property)
uint32_t proxy_set_property(const char *path, uint32_t path_len, const char *value,
                            uint32_t value_len);

/* stream control */
PROXY_IMPORT(proxy_continue_stream)
uint32_t proxy_continue_stream(uint32_t stream_type);
PROXY_IMPORT(proxy_close_stream)
uint32_t proxy_close_stream(uint32_t stream_type);
PROXY_IMPORT(proxy_send_local_response)
uint32_t proxy_send_local_response(uint32_t status_code, const char *details,
                                   uint32_t details_len, const char *body, uint32_t body_len,
                                   const char *headers, uint32_t headers_len,
                                   int32_t grpc_status);
PROXY_IMPORT(proxy_get_status)
uint32_t proxy_get_status(uint32_t *ret_code, char **ret_msg_ptr, uint32_t *ret_msg_size);

/* HTTP and gRPC callouts */
PROXY_IMPORT(proxy_http_call)
uint32_t proxy_http_call(const char *upstream, uint32_t upstream_len, const char *headers,
                         uint32_t headers_len, const char *body, uint32_t body_len,
                         const char *trailers, uint32_t trailers_len, uint32_t timeout_ms,
                         uint32_t *ret_token);
PROXY_IMPORT(proxy_grpc_call)
uint32_t proxy_grpc_call(const char *upstream, uint32_t upstream_len, const char *service,
                         uint32_t service_len, const char *method, uint32_t method_len,
                         const char *metadata, uint32_t metadata_len, const char *message,
                         uint32_t message_len, uint32_t timeout_ms, uint32_t *ret_token);
PROXY_IMPORT(proxy_grpc_stream)
uint32_t proxy_grpc_stream(const char *upstream, uint32_t upstream_len, const char *service,
                           uint32_t service_len, const char *method, uint32_t method_len,
                           const char *metadata, uint32_t metadata_len, uint32_t *ret_token);
PROXY_IMPORT(proxy_grpc_send)
uint32_t proxy_grpc_send(uint32_t token, const char *message, uint32_t message_len,
                         uint32_t end_stream);
PROXY_IMPORT(proxy_grpc_cancel)
uint32_t proxy_grpc_cancel(uint32_t token);
PROXY_IMPORT(proxy_grpc_close)
uint32_t proxy_grpc_close(uint32_t token);

/* shared data and queues */
PROXY_IMPORT(proxy_get_shared_data)
uint32_t proxy_get_shared_data(const char *key, uint32_t key_len, char **ret_value,
                               uint32_t *ret_value_size, uint32_t *ret_cas);
PROXY_IMPORT(proxy_set_shared_data)
uint32_t proxy_set_shared_data(const char *key, uint32_t key_len, const char *value,
                               uint32_t value_len, uint32_t cas);
PROXY_IMPORT(proxy_register_shared_queue)
uint32_t proxy_register_shared_queue(const char *name, uint32_t name_len, uint32_t *ret_token);
PROXY_IMPORT(proxy_resolve_shared_queue)
uint32_t proxy_resolve_shared_queue(const char *vm_id, uint32_t vm_id_len, const char *name,
                                    uint32_t name_len, uint32_t *ret_token);
PROXY_IMPORT(proxy_enqueue_shared_queue)
uint32_t proxy_enqueue_shared_queue(uint32_t token, const char *value, uint32_t value_len);
PROXY_IMPORT(proxy_dequeue_shared_queue)
uint32_t proxy_dequeue_shared_queue(uint32_t token, char **ret_value, uint32_t *ret_size);

/* metrics: increment takes a signed i64, record an (unsigned) i64 */
PROXY_IMPORT(proxy_define_metric)
uint32_t proxy_define_metric(uint32_t metric_type, const char *name, uint32_t name_len,
                             uint32_t *ret_id);
PROXY_IMPORT(proxy_increment_metric)
uint32_t proxy_increment_metric(uint32_t metric_id, int64_t offset);
PROXY_IMPORT(proxy_record_metric)
uint32_t proxy_record_metric(uint32_t metric_id, uint64_t value);
PROXY_IMPORT(proxy_get_metric)
uint32_t proxy_get_metric(uint32_t metric_id, uint64_t *ret_value);

/* contexts and foreign functions */
PROXY_IMPORT(proxy_set_effective_context)
uint32_t proxy_set_effective_context(uint32_t context_id);
PROXY_IMPORT(proxy_done)
uint32_t proxy_done(void);
PROXY_IMPORT(proxy_call_foreign_function)
uint32_t proxy_call_foreign_function(const char *name, uint32_t name_len, const char *args,
                                     uint32_t args_len, char **ret_ptr, uint32_t *ret_size);

#endif /* WASMDESK_PROXY_ABI_H */
