// add_header (demo): adds one request header and one response header.
//
// Configuration (every field optional):
//   {"request_header":  {"name": "x-wasmdesk",        "value": "hello"},
//    "response_header": {"name": "x-wasmdesk-plugin", "value": "add_header"}}
// Logs at info, once per header added: "add_header: added <name> to <path>".

export * from "./lib/abi";
import { Context, FilterHeadersStatusValues, LogLevelValues, RootContext, log, registerRootContext, stream_context } from "@solo-io/proxy-runtime";
import { acceptConfiguration, loadConfiguration } from "./lib/config";
import { readHeaderName, readHeaderValue } from "./lib/http";

const ROOT_ID = "add_header";

class AddHeaderRoot extends RootContext {
  request_name: string = "x-wasmdesk";
  request_value: string = "hello";
  response_name: string = "x-wasmdesk-plugin";
  response_value: string = "add_header";

  createContext(context_id: u32): Context {
    return new AddHeader(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["request_header", "response_header"]);
    const request = config.object("request_header");
    request.allowOnly(["name", "value"]);
    const request_name = readHeaderName(request, "name", "x-wasmdesk");
    const request_value = readHeaderValue(request, "value", "hello");
    const response = config.object("response_header");
    response.allowOnly(["name", "value"]);
    const response_name = readHeaderName(response, "name", "x-wasmdesk-plugin");
    const response_value = readHeaderValue(response, "value", "add_header");
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    this.request_name = request_name;
    this.request_value = request_value;
    this.response_name = response_name;
    this.response_value = response_value;
    return true;
  }
}

class AddHeader extends Context {
  root: AddHeaderRoot;
  path: string = "";

  constructor(context_id: u32, root: AddHeaderRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    this.path = stream_context.headers.request.get(":path");
    stream_context.headers.request.add(this.root.request_name, this.root.request_value);
    log(LogLevelValues.info, "add_header: added " + this.root.request_name + " to " + this.path);
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add(this.root.response_name, this.root.response_value);
    log(LogLevelValues.info, "add_header: added " + this.root.response_name + " to " + this.path);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new AddHeaderRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new AddHeaderRoot(context_id), "");
