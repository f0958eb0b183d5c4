// Host-call helpers the SDK (@solo-io/proxy-runtime 0.1.8) lacks or gets wrong.
//
// - There is no proxy_set_buffer_bytes import at all (imports.ts declares a
//   `proxy_set_buffer_status` bound to the *get* function), so it is declared here.
// - The SDK's get_shared_data / set_shared_data / register_shared_queue wrappers pass the wrong
//   pointers (and drop the CAS), so these call the raw imports from the SDK's imports module.
// - RootContext.onConfigure passes `configuration_size` as the return-size *pointer* of
//   proxy_get_buffer_bytes (the host writes the size to that address, corrupting low memory),
//   so readPluginConfiguration reads the configuration correctly instead.

import * as imports from "@solo-io/proxy-runtime/imports";
import { free } from "@solo-io/proxy-runtime/malloc";
import { HeaderPair, WasmResultValues } from "@solo-io/proxy-runtime";
import { BufferTypeValues, get_buffer_bytes } from "@solo-io/proxy-runtime/runtime";

// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(buffer_type: i32, start: u32, size: u32, data_ptr: usize, data_size: usize): u32;

// Out-parameter slots for host calls that return a (pointer, size) pair or a u32.
class BytesOut {
  buffer: usize = 0;
  size: usize = 0;

  bufferPtr(): usize { return changetype<usize>(this) + offsetof<BytesOut>("buffer"); }
  sizePtr(): usize { return changetype<usize>(this) + offsetof<BytesOut>("size"); }

  // Takes ownership of the host-allocated buffer (allocated through the SDK's exported malloc,
  // which retains it once; that retain is released here, as the SDK itself does).
  take(): ArrayBuffer {
    if (this.buffer == 0) return new ArrayBuffer(0);
    let array = changetype<ArrayBuffer>(this.buffer);
    free(this.buffer);
    this.buffer = 0;
    if (<usize>array.byteLength > this.size) return array.slice(0, <i32>this.size);
    return array;
  }
}

class U32Out {
  value: u32 = 0;
  ptr(): usize { return changetype<usize>(this) + offsetof<U32Out>("value"); }
}

export function header(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

// The plugin configuration (PLUGIN_CONFIGURATION buffer) as text; "" when the size is 0.
export function readPluginConfiguration(size: u32): string {
  if (size == 0) return "";
  return String.UTF8.decode(get_buffer_bytes(BufferTypeValues.PluginConfiguration, 0, size));
}

// Replaces bytes [start, start + size) of a buffer (start 0, size >= length: replace all).
export function setBufferBytes(buffer_type: BufferTypeValues, start: u32, size: u32, data: ArrayBuffer): WasmResultValues {
  return proxy_set_buffer_bytes(buffer_type, start, size, changetype<usize>(data), data.byteLength);
}

export class SharedData {
  status: WasmResultValues = WasmResultValues.Ok;
  value: ArrayBuffer = new ArrayBuffer(0);
  cas: u32 = 0;
}

// proxy_get_shared_data: status Ok (value and cas set) or NotFound.
export function getSharedData(key: string): SharedData {
  const key_buffer = String.UTF8.encode(key);
  const out = new BytesOut();
  const cas = new U32Out();
  const result = new SharedData();
  result.status = imports.proxy_get_shared_data(changetype<usize>(key_buffer), key_buffer.byteLength,
    out.bufferPtr(), out.sizePtr(), cas.ptr());
  if (result.status == WasmResultValues.Ok) {
    result.value = out.take();
    result.cas = cas.value;
  }
  return result;
}

// proxy_set_shared_data: Ok or CasMismatch.
export function setSharedData(key: string, value: ArrayBuffer, cas: u32): WasmResultValues {
  const key_buffer = String.UTF8.encode(key);
  return imports.proxy_set_shared_data(changetype<usize>(key_buffer), key_buffer.byteLength,
    changetype<usize>(value), value.byteLength, cas);
}

export class QueueRegistration {
  status: WasmResultValues = WasmResultValues.Ok;
  token: u32 = 0;
}

export function registerSharedQueue(name: string): QueueRegistration {
  const name_buffer = String.UTF8.encode(name);
  const token = new U32Out();
  const result = new QueueRegistration();
  result.status = imports.proxy_register_shared_queue(changetype<usize>(name_buffer), name_buffer.byteLength, token.ptr());
  result.token = token.value;
  return result;
}

// proxy_remove_header_map_value without the SDK wrapper's abort on a non-Ok status (a host may
// answer NotFound for a header that is not there).
export function removeHeader(map_type: i32, key: string): WasmResultValues {
  const key_buffer = String.UTF8.encode(key);
  return imports.proxy_remove_header_map_value(map_type, changetype<usize>(key_buffer), key_buffer.byteLength);
}

export class Dequeued {
  status: WasmResultValues = WasmResultValues.Ok;
  data: ArrayBuffer = new ArrayBuffer(0);
}

// proxy_dequeue_shared_queue: Ok (data set), Empty or NotFound. (The SDK's
// dequeue_shared_queue does not compile with assemblyscript 0.14.9: its result class leaves
// `data` uninitialized.)
export function dequeueSharedQueue(token: u32): Dequeued {
  const out = new BytesOut();
  const result = new Dequeued();
  result.status = imports.proxy_dequeue_shared_queue(token, out.bufferPtr(), out.sizePtr());
  if (result.status == WasmResultValues.Ok) result.data = out.take();
  return result;
}
