// config_parse (test): parses a JSON configuration and echoes it into request headers.
//
// Configuration:
//   {"name": "<string, required>", "enabled": true, "limit": 10, "tags": ["a", "b"],
//    "nested": {"key": "<string>"}}
// "name" is required (so an empty configuration is rejected); "enabled" defaults to true,
// "limit" (an integer) to 10, "tags" to [], "nested" to {} and "nested.key" to "". Strings must
// not contain CR, LF or NUL (they become header values). Unknown fields, a missing "name" or a
// wrong type make on_configure return false and log at error "config_parse: <what is wrong>".
// A valid configuration is logged at info:
//   "config_parse: name=<name> enabled=<true|false> limit=<n> tags=<a,b> nested.key=<key>"
// Each request gets the headers x-config-name, x-config-enabled ("true"/"false"),
// x-config-limit, x-config-tags (comma-joined, "" when empty) and x-config-nested-key.

export * from "./lib/abi";
import {
  Context, FilterHeadersStatusValues, LogLevelValues, RootContext, log, registerRootContext,
  stream_context,
} from "@solo-io/proxy-runtime";
import { ConfigReader, acceptConfiguration, loadConfiguration } from "./lib/config";
import { isHeaderValue } from "./lib/http";

const ROOT_ID = "config_parse";
const MAX_SAFE: i64 = 9007199254740991;

function checkHeaderValue(config: ConfigReader, field: string, value: string): void {
  if (config.ok() && !isHeaderValue(value)) {
    config.errors.add("field \"" + field + "\" must not contain CR, LF or NUL");
  }
}

class ConfigParseRoot extends RootContext {
  name: string = "";
  enabled: bool = true;
  limit: i64 = 10;
  tags: string = "";
  nested_key: string = "";

  createContext(context_id: u32): Context {
    return new ConfigParse(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["name", "enabled", "limit", "tags", "nested"]);
    config.requireField("name");
    const name = config.string("name", "");
    checkHeaderValue(config, "name", name);
    const enabled = config.boolean("enabled", true);
    const limit = config.integer("limit", 10, -MAX_SAFE, MAX_SAFE);
    const tag_list = config.stringList("tags", []);
    const tags = tag_list.join(",");
    checkHeaderValue(config, "tags", tags);
    const nested = config.object("nested");
    nested.allowOnly(["key"]);
    const nested_key = nested.string("key", "");
    checkHeaderValue(config, "nested.key", nested_key);
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    this.name = name;
    this.enabled = enabled;
    this.limit = limit;
    this.tags = tags;
    this.nested_key = nested_key;
    log(LogLevelValues.info, "config_parse: name=" + name + " enabled=" + (enabled ? "true" : "false") +
      " limit=" + limit.toString() + " tags=" + tags + " nested.key=" + nested_key);
    return true;
  }
}

class ConfigParse extends Context {
  root: ConfigParseRoot;

  constructor(context_id: u32, root: ConfigParseRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root;
    const request = stream_context.headers.request;
    request.add("x-config-name", root.name);
    request.add("x-config-enabled", root.enabled ? "true" : "false");
    request.add("x-config-limit", root.limit.toString());
    request.add("x-config-tags", root.tags);
    request.add("x-config-nested-key", root.nested_key);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new ConfigParseRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new ConfigParseRoot(context_id), "");
