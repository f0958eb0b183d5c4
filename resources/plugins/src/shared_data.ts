// shared_data (test): a shared-data counter with compare-and-swap, plus a shared queue.
//
// Configuration (optional): {"key": "shared_data.counter"}
// on_configure: registers the shared queue "shared_data.events" and defines the counter metric
// "shared_data.dequeued".
// on_request_headers:
//   1. get the shared value of `key` (absent or empty = 0; not a decimal integer = 0 with a warn
//      log), set it to value + 1 passing the CAS from the get; on CasMismatch start over, at
//      most 5 retries (6 attempts). On success add request header "x-shared-count: <new value>";
//      when every attempt failed, log a warn line and add no header.
//   2. enqueue the request's :path on "shared_data.events".
// on_queue_ready: dequeue until the queue is empty (at most 1000 items per call); for each item
// log at info "queue: <item>" and increment "shared_data.dequeued".

export * from "./lib/abi";
import {
  Context, FilterHeadersStatusValues, LogLevelValues, RootContext, WasmResultValues, log,
  registerRootContext, stream_context,
} from "@solo-io/proxy-runtime";
import {
  MetricTypeValues, define_metric, enqueue_shared_queue, increment_metric,
} from "@solo-io/proxy-runtime/runtime";
import { acceptConfiguration, loadConfiguration } from "./lib/config";
import { dequeueSharedQueue, getSharedData, registerSharedQueue, setSharedData } from "./lib/hostcalls";

const ROOT_ID = "shared_data";
const QUEUE_NAME = "shared_data.events";
const MAX_RETRIES = 5;
const MAX_DEQUEUE = 1000;

// A non-negative decimal integer, or -1 when the text is not one.
function parseCount(text: string): i64 {
  if (text.length == 0 || text.length > 18) return -1;
  let value: i64 = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
    value = value * 10 + (c - 0x30);
  }
  return value;
}

class SharedDataRoot extends RootContext {
  key: string = "shared_data.counter";
  queue_token: u32 = 0;
  dequeued_metric: u32 = 0;
  registered: bool = false;

  createContext(context_id: u32): Context {
    return new SharedDataContext(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["key"]);
    const key = config.string("key", "shared_data.counter", false);
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    if (!this.registered) {
      const queue = registerSharedQueue(QUEUE_NAME);
      if (queue.status != WasmResultValues.Ok) {
        log(LogLevelValues.error, ROOT_ID + ": cannot register the shared queue " + QUEUE_NAME +
          " (status " + queue.status.toString() + ")");
        return false;
      }
      const dequeued = define_metric(MetricTypeValues.Counter, "shared_data.dequeued");
      if (dequeued.result != WasmResultValues.Ok) {
        log(LogLevelValues.error, ROOT_ID + ": cannot define the metric shared_data.dequeued");
        return false;
      }
      this.queue_token = queue.token;
      this.dequeued_metric = dequeued.metric_id;
      this.registered = true;
    }
    this.key = key;
    return true;
  }

  onQueueReady(token: u32): void {
    let count = 0;
    while (count < MAX_DEQUEUE && this.dequeueOne(token)) count++;
  }

  // Dequeues and logs one item; false when the queue is empty (or unknown). A helper, not a loop
  // body: assemblyscript 0.14.9 leaks a managed loop-body local on `break`.
  dequeueOne(token: u32): bool {
    const item = dequeueSharedQueue(token);
    if (item.status != WasmResultValues.Ok) return false;
    log(LogLevelValues.info, "queue: " + String.UTF8.decode(item.data));
    increment_metric(this.dequeued_metric, 1);
    return true;
  }

  // Increments the shared counter; returns the new value, or -1 when every attempt failed.
  incrementCounter(): i64 {
    for (let attempt = 0; attempt <= MAX_RETRIES; attempt++) {
      const current = getSharedData(this.key);
      let value: i64 = 0;
      if (current.status == WasmResultValues.Ok && current.value.byteLength > 0) {
        const text = String.UTF8.decode(current.value);
        value = parseCount(text);
        if (value < 0) {
          log(LogLevelValues.warn, "shared_data: value of " + this.key + " is not an integer: \"" + text + "\", using 0");
          value = 0;
        }
      }
      const next = value + 1;
      const status = setSharedData(this.key, String.UTF8.encode(next.toString()), current.cas);
      if (status == WasmResultValues.Ok) return next;
      if (status != WasmResultValues.CasMismatch) {
        log(LogLevelValues.warn, "shared_data: set " + this.key + " failed (status " + status.toString() + ")");
        return -1;
      }
    }
    log(LogLevelValues.warn, "shared_data: gave up on " + this.key + " after " + (MAX_RETRIES + 1).toString() + " CAS mismatches");
    return -1;
  }
}

class SharedDataContext extends Context {
  root: SharedDataRoot;

  constructor(context_id: u32, root: SharedDataRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const count = this.root.incrementCounter();
    if (count >= 0) stream_context.headers.request.add("x-shared-count", count.toString());
    const path = stream_context.headers.request.get(":path");
    const status = enqueue_shared_queue(this.root.queue_token, String.UTF8.encode(path));
    if (status != WasmResultValues.Ok) {
      log(LogLevelValues.warn, "shared_data: enqueue failed (status " + status.toString() + ")");
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new SharedDataRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new SharedDataRoot(context_id), "");
