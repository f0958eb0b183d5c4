// path_counter (demo): counts requests per path and records request body sizes.
//
// Configuration (optional): {"max_paths": 100}
// Per request: counter "path_counter.total" +1 and counter "path_counter.requests.<path>" +1,
// where <path> is :path without its query string ("?..."), every byte outside [A-Za-z0-9_]
// replaced by "_" ("/api/v1" -> "_api_v1"; a missing or empty path counts as "/"). Once
// max_paths distinct paths have a counter, requests for new paths go to
// "path_counter.requests.other". Each metric is defined once and its id cached.
// Requests with a body: the body is buffered (paused) until end_of_stream, then its size is
// recorded in the histogram "path_counter.request_bytes".

export * from "./lib/abi";
import {
  Context, FilterDataStatusValues, FilterHeadersStatusValues, LogLevelValues, RootContext, log,
  registerRootContext,
} from "@solo-io/proxy-runtime";
import {
  HeaderMapTypeValues, MetricTypeValues, define_metric, get_header_map_value, increment_metric,
  record_metric,
} from "@solo-io/proxy-runtime/runtime";
import { acceptConfiguration, loadConfiguration } from "./lib/config";

const ROOT_ID = "path_counter";
const PREFIX = "path_counter.requests.";

// "/api/v1?x=1" -> "_api_v1"
function metricSuffix(path: ArrayBuffer): string {
  const bytes = Uint8Array.wrap(path);
  const units = new Array<i32>();
  for (let i = 0; i < bytes.length; i++) {
    const c = <i32>bytes[i];
    if (c == 0x3f) break; // '?': the query string is not part of the path
    const keep = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f;
    units.push(keep ? c : 0x5f);
  }
  if (units.length == 0) return "_";
  return String.fromCharCodes(units);
}

class PathCounterRoot extends RootContext {
  max_paths: i32 = 100;
  path_metrics: Map<string, u32> = new Map();
  other_metric: u32 = 0;
  total_metric: u32 = 0;
  bytes_metric: u32 = 0;
  metrics_defined: bool = false;

  createContext(context_id: u32): Context {
    return new PathCounter(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["max_paths"]);
    const max_paths = config.integer("max_paths", 100, 0, 100000);
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    if (!this.metrics_defined) {
      const total = define_metric(MetricTypeValues.Counter, "path_counter.total");
      const other = define_metric(MetricTypeValues.Counter, PREFIX + "other");
      const bytes = define_metric(MetricTypeValues.Histogram, "path_counter.request_bytes");
      if (total.result != 0 || other.result != 0 || bytes.result != 0) {
        log(LogLevelValues.error, ROOT_ID + ": cannot define the metrics");
        return false;
      }
      this.total_metric = total.metric_id;
      this.other_metric = other.metric_id;
      this.bytes_metric = bytes.metric_id;
      this.metrics_defined = true;
    }
    this.max_paths = <i32>max_paths;
    return true;
  }

  // The counter for a path, defined on first use; "other" once max_paths paths have one.
  metricFor(suffix: string): u32 {
    if (this.path_metrics.has(suffix)) return this.path_metrics.get(suffix);
    if (this.path_metrics.size >= this.max_paths) return this.other_metric;
    const defined = define_metric(MetricTypeValues.Counter, PREFIX + suffix);
    if (defined.result != 0) {
      log(LogLevelValues.warn, "path_counter: cannot define " + PREFIX + suffix + ", counting it as other");
      return this.other_metric;
    }
    this.path_metrics.set(suffix, defined.metric_id);
    return defined.metric_id;
  }
}

class PathCounter extends Context {
  root: PathCounterRoot;

  constructor(context_id: u32, root: PathCounterRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const path = get_header_map_value(HeaderMapTypeValues.RequestHeaders, String.UTF8.encode(":path"));
    increment_metric(this.root.total_metric, 1);
    increment_metric(this.root.metricFor(metricSuffix(path)), 1);
    return FilterHeadersStatusValues.Continue;
  }

  onRequestBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    record_metric(this.root.bytes_metric, <u64>body_buffer_length);
    return FilterDataStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new PathCounterRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new PathCounterRoot(context_id), "");
