// The Proxy-Wasm ABI surface of every plugin: `export * from "./lib/abi";` in place of the SDK's
// usual `export * from "@solo-io/proxy-runtime/proxy";`.
//
// It exports exactly what @solo-io/proxy-runtime 0.1.8's proxy.ts exports (same names, same
// signatures, same order, including the SDK's misspelled proxy_on_grpc_trailing_metadata) and
// dispatches to the SDK's contexts as the SDK's exports.ts does, with one difference. The SDK's
// exports look contexts up with getContext()/getRootContext(), whose checked downcast
// (`context_map.get(id) as Context`) assemblyscript 0.14.9 compiles to two retains against the
// caller's one release: every such callback leaks a reference. A stream context is then never
// freed (measured: memory grows ~50 bytes per request with the SDK's exports, flat with these),
// and a root context's reference count creeps towards the runtime's 2^28 overflow abort. Here the
// lookup is getBaseContext() plus an unchecked changetype (the context map only ever holds what
// the SDK put there), which does not leak.
//
// Why every export is defined here, in the SDK's order, rather than re-exported: AssemblyScript
// 0.14 cannot shadow single names of an `export *`, and it compiles exports in the order they
// appear. Dispatch relies on that order: the virtual stub of RootContext#createContext (reached
// from proxy_on_context_create) must be finalized before the stubs of the stream callbacks, or
// the plugin's Context subclass is not yet known when those are built and its overrides are
// silently skipped. build.py's lint checks that every plugin method made it into the module.

import { Context, RootContext } from "@solo-io/proxy-runtime";
import { free as sdk_free, malloc as sdk_malloc } from "@solo-io/proxy-runtime/malloc";
import { deleteContext, ensureContext, ensureRootContext, getBaseContext } from "@solo-io/proxy-runtime/runtime";

function streamContext(context_id: u32): Context {
  return changetype<Context>(getBaseContext(context_id));
}

function rootContext(context_id: u32): RootContext {
  return changetype<RootContext>(getBaseContext(context_id));
}

export function malloc(size: i32): usize {
  return sdk_malloc(size);
}

export function free(ptr: usize): void {
  sdk_free(ptr);
}

export function proxy_abi_version_0_2_0(): void { }

export function proxy_on_vm_start(root_context_id: u32, configuration_size: u32): u32 {
  return rootContext(root_context_id).onStart(configuration_size) ? 1 : 0;
}

export function proxy_validate_configuration(root_context_id: u32, configuration_size: u32): u32 {
  return rootContext(root_context_id).validateConfiguration(configuration_size) ? 1 : 0;
}

export function proxy_on_configure(root_context_id: u32, configuration_size: u32): u32 {
  return rootContext(root_context_id).onConfigure(configuration_size) ? 1 : 0;
}

export function proxy_on_tick(root_context_id: u32): void {
  rootContext(root_context_id).onTick();
}

// Not implemented by the SDK either.
export function proxy_on_foreign_function(root_context_id: u32, function_id: u32, data_size: u32): void { }

export function proxy_on_queue_ready(root_context_id: u32, token: u32): void {
  rootContext(root_context_id).onQueueReady(token);
}

export function proxy_on_context_create(context_id: u32, root_context_id: u32): void {
  if (root_context_id != 0) {
    ensureContext(context_id, root_context_id);
  } else {
    ensureRootContext(context_id);
  }
}

export function proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32): i32 {
  return streamContext(context_id).onRequestHeaders(headers, end_of_stream != 0) as i32;
}

export function proxy_on_request_body(context_id: u32, body_buffer_length: u32, end_of_stream: u32): i32 {
  return streamContext(context_id).onRequestBody(body_buffer_length, end_of_stream != 0) as i32;
}

export function proxy_on_request_trailers(context_id: u32, trailers: u32): i32 {
  return streamContext(context_id).onRequestTrailers(trailers) as i32;
}

export function proxy_on_request_metadata(context_id: u32, nelements: u32): i32 {
  return streamContext(context_id).onRequestMetadata(nelements) as i32;
}

export function proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: u32): i32 {
  return streamContext(context_id).onResponseHeaders(headers, end_of_stream != 0) as i32;
}

export function proxy_on_response_body(context_id: u32, body_buffer_length: u32, end_of_stream: u32): i32 {
  return streamContext(context_id).onResponseBody(body_buffer_length, end_of_stream != 0) as i32;
}

export function proxy_on_response_trailers(context_id: u32, trailers: u32): i32 {
  return streamContext(context_id).onResponseTrailers(trailers) as i32;
}

export function proxy_on_response_metadata(context_id: u32, nelements: u32): i32 {
  return streamContext(context_id).onResponseMetadata(nelements) as i32;
}

export function proxy_on_http_call_response(context_id: u32, token: u32, headers: u32, body_size: u32, trailers: u32): void {
  rootContext(context_id).onHttpCallResponse(token, headers, body_size, trailers);
}

export function proxy_on_grpc_receive_initial_metadata(context_id: u32, token: u32, headers: u32): void {
  rootContext(context_id).on_grpc_receive_initial_metadata(token, headers);
}

// The SDK's name (the ABI's is proxy_on_grpc_receive_trailing_metadata); kept for fidelity.
export function proxy_on_grpc_trailing_metadata(context_id: u32, token: u32, trailers: u32): void {
  rootContext(context_id).on_grpc_trailing_metadata(token, trailers);
}

export function proxy_on_grpc_receive(context_id: u32, token: u32, response_size: u32): void {
  rootContext(context_id).on_grpc_receive(token, response_size);
}

export function proxy_on_grpc_close(context_id: u32, token: u32, status_code: u32): void {
  rootContext(context_id).on_grpc_close(token, status_code);
}

export function proxy_on_done(context_id: u32): u32 {
  return getBaseContext(context_id).onDone() ? 1 : 0;
}

export function proxy_on_log(context_id: u32): void {
  streamContext(context_id).onLog();
}

export function proxy_on_delete(context_id: u32): void {
  getBaseContext(context_id).onDelete();
  deleteContext(context_id);
}
