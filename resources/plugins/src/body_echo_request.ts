// body_echo_request (test): request-body buffering and replacement.
//
// on_request_body: returns StopIterationAndBuffer until end_of_stream; then reads the whole
// buffered body, replaces it with its ASCII-uppercased copy (a-z -> A-Z, other bytes unchanged,
// so the length stays the same) and adds request header "x-request-body-size: <length>".
// Requests without a body are untouched. No configuration (ignored, unread).

export * from "./lib/abi";
import {
  Context, FilterDataStatusValues, LogLevelValues, RootContext, log, registerRootContext,
  stream_context,
} from "@solo-io/proxy-runtime";
import { BufferTypeValues, get_buffer_bytes } from "@solo-io/proxy-runtime/runtime";
import { asciiUpper } from "./lib/bytes";
import { setBufferBytes } from "./lib/hostcalls";

class BodyEchoRequestRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new BodyEchoRequest(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    return true;
  }
}

class BodyEchoRequest extends Context {
  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    const size = <u32>body_buffer_length;
    if (size > 0) {
      const body = get_buffer_bytes(BufferTypeValues.HttpRequestBody, 0, size);
      const status = setBufferBytes(BufferTypeValues.HttpRequestBody, 0, size, asciiUpper(body));
      if (status != 0) {
        log(LogLevelValues.warn, "body_echo_request: cannot replace the body (status " + status.toString() + ")");
      }
    }
    stream_context.headers.request.add("x-request-body-size", size.toString());
    return FilterDataStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new BodyEchoRequestRoot(context_id), "body_echo_request");
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new BodyEchoRequestRoot(context_id), "");
