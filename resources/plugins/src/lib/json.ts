// A small JSON parser for plugin configurations (RFC 8259).
//
// @solo-io/proxy-runtime 0.1.8 ships no JSON support, so the plugins use this one. It parses
// objects, arrays, strings (all escapes, including \uXXXX and surrogate pairs), numbers,
// booleans and null, and reports the first error with its character offset. Duplicate object
// keys: the last one wins (as JSON.parse does). Nesting is limited to MAX_DEPTH levels.

export enum JsonKind { Null, Bool, Number, String, Array, Object }

const MAX_DEPTH = 64;

export class JsonValue {
  kind: JsonKind;
  boolValue: bool = false;
  numValue: f64 = 0;
  strValue: string = "";
  items: Array<JsonValue> = [];
  keys: Array<string> = [];
  private fields: Map<string, JsonValue> = new Map();

  constructor(kind: JsonKind) {
    this.kind = kind;
  }

  static makeObject(): JsonValue {
    return new JsonValue(JsonKind.Object);
  }

  isNull(): bool { return this.kind == JsonKind.Null; }
  isBool(): bool { return this.kind == JsonKind.Bool; }
  isNumber(): bool { return this.kind == JsonKind.Number; }
  isString(): bool { return this.kind == JsonKind.String; }
  isArray(): bool { return this.kind == JsonKind.Array; }
  isObject(): bool { return this.kind == JsonKind.Object; }

  // A number with no fractional part that a double represents exactly (|v| <= 2^53 - 1).
  isInteger(): bool {
    if (this.kind != JsonKind.Number) return false;
    const v = this.numValue;
    return Math.floor(v) == v && Math.abs(v) <= 9007199254740991.0;
  }

  // The member `key` of an object; null when absent.
  get(key: string): JsonValue | null {
    if (!this.fields.has(key)) return null;
    return this.fields.get(key);
  }

  set(key: string, value: JsonValue): void {
    if (!this.fields.has(key)) this.keys.push(key);
    this.fields.set(key, value);
  }

  typeName(): string {
    switch (this.kind) {
      case JsonKind.Null: return "null";
      case JsonKind.Bool: return "boolean";
      case JsonKind.Number: return "number";
      case JsonKind.String: return "string";
      case JsonKind.Array: return "array";
    }
    return "object";
  }
}

export class JsonParser {
  private text: string;
  private pos: i32 = 0;
  private depth: i32 = 0;
  // Empty when parsing succeeded; otherwise "invalid JSON at offset <n>: <reason>".
  error: string = "";

  constructor(text: string) {
    this.text = text;
  }

  // Parses the whole text as one JSON value. On failure returns a null-kind value and sets
  // `error`.
  parse(): JsonValue {
    this.skipWhitespace();
    const value = this.parseValue();
    if (this.error != "") return new JsonValue(JsonKind.Null);
    this.skipWhitespace();
    if (this.pos < this.text.length) {
      this.fail("unexpected character after the JSON value");
      return new JsonValue(JsonKind.Null);
    }
    return value;
  }

  private fail(reason: string): void {
    if (this.error == "") {
      this.error = "invalid JSON at offset " + this.pos.toString() + ": " + reason;
    }
  }

  private peek(): i32 {
    return this.pos < this.text.length ? this.text.charCodeAt(this.pos) : -1;
  }

  private skipWhitespace(): void {
    while (this.pos < this.text.length) {
      const c = this.text.charCodeAt(this.pos);
      if (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) {
        this.pos++;
      } else {
        break;
      }
    }
  }

  private parseValue(): JsonValue {
    const c = this.peek();
    if (c == 0x7b) return this.parseObject();   // {
    if (c == 0x5b) return this.parseArray();    // [
    if (c == 0x22) {                            // "
      const s = new JsonValue(JsonKind.String);
      s.strValue = this.parseString();
      return s;
    }
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.parseNumber();
    if (this.matchWord("true")) {
      const t = new JsonValue(JsonKind.Bool);
      t.boolValue = true;
      return t;
    }
    if (this.matchWord("false")) return new JsonValue(JsonKind.Bool);
    if (this.matchWord("null")) return new JsonValue(JsonKind.Null);
    if (c == -1) {
      this.fail("unexpected end of input");
    } else {
      this.fail("unexpected character '" + String.fromCharCode(c) + "'");
    }
    return new JsonValue(JsonKind.Null);
  }

  private matchWord(word: string): bool {
    if (this.text.startsWith(word, this.pos)) {
      this.pos += word.length;
      return true;
    }
    return false;
  }

  private enter(): bool {
    this.depth++;
    if (this.depth > MAX_DEPTH) {
      this.fail("nesting deeper than " + MAX_DEPTH.toString() + " levels");
      return false;
    }
    return true;
  }

  // Container loops call one helper per member and keep no managed local in the loop body:
  // assemblyscript 0.14.9 does not release such a local when an iteration ends with
  // `continue`/`break`, which leaked every parsed container.
  private parseObject(): JsonValue {
    const obj = new JsonValue(JsonKind.Object);
    if (!this.enter()) return obj;
    this.pos++; // {
    this.skipWhitespace();
    if (this.peek() == 0x7d) {
      this.pos++;
    } else {
      while (this.parseMember(obj)) {}
    }
    this.depth--;
    return obj;
  }

  // Parses `"key": value` and the following ',' or '}'; true when another member follows.
  private parseMember(obj: JsonValue): bool {
    this.skipWhitespace();
    if (this.peek() != 0x22) {
      this.fail("expected a string key");
      return false;
    }
    const key = this.parseString();
    if (this.error != "") return false;
    this.skipWhitespace();
    if (this.peek() != 0x3a) {
      this.fail("expected ':' after an object key");
      return false;
    }
    this.pos++;
    this.skipWhitespace();
    const value = this.parseValue();
    if (this.error != "") return false;
    obj.set(key, value);
    this.skipWhitespace();
    const c = this.peek();
    if (c == 0x2c) {
      this.pos++;
      return true;
    }
    if (c == 0x7d) {
      this.pos++;
      return false;
    }
    this.fail("expected ',' or '}' in an object");
    return false;
  }

  private parseArray(): JsonValue {
    const arr = new JsonValue(JsonKind.Array);
    if (!this.enter()) return arr;
    this.pos++; // [
    this.skipWhitespace();
    if (this.peek() == 0x5d) {
      this.pos++;
    } else {
      while (this.parseItem(arr)) {}
    }
    this.depth--;
    return arr;
  }

  // Parses one array element and the following ',' or ']'; true when another element follows.
  private parseItem(arr: JsonValue): bool {
    this.skipWhitespace();
    const value = this.parseValue();
    if (this.error != "") return false;
    arr.items.push(value);
    this.skipWhitespace();
    const c = this.peek();
    if (c == 0x2c) {
      this.pos++;
      return true;
    }
    if (c == 0x5d) {
      this.pos++;
      return false;
    }
    this.fail("expected ',' or ']' in an array");
    return false;
  }

  private hexDigit(c: i32): i32 {
    if (c >= 0x30 && c <= 0x39) return c - 0x30;
    if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
    if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
    return -1;
  }

  // Parses a string starting at the opening quote; returns its value.
  private parseString(): string {
    this.pos++; // opening quote
    let out = "";
    let runStart = this.pos;
    while (true) {
      if (this.pos >= this.text.length) {
        this.fail("unterminated string");
        return out;
      }
      const c = this.text.charCodeAt(this.pos);
      if (c == 0x22) {
        out += this.text.substring(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) {
        this.fail("control character in a string (must be escaped)");
        return out;
      }
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      // Backslash escape.
      out += this.text.substring(runStart, this.pos);
      this.pos++;
      if (this.pos >= this.text.length) {
        this.fail("unterminated string");
        return out;
      }
      const e = this.text.charCodeAt(this.pos);
      this.pos++;
      if (e == 0x22) out += "\"";
      else if (e == 0x5c) out += "\\";
      else if (e == 0x2f) out += "/";
      else if (e == 0x62) out += "\b";
      else if (e == 0x66) out += "\f";
      else if (e == 0x6e) out += "\n";
      else if (e == 0x72) out += "\r";
      else if (e == 0x74) out += "\t";
      else if (e == 0x75) {
        // \uXXXX: one UTF-16 code unit; a surrogate pair is two escapes and recombines
        // naturally because AssemblyScript strings are UTF-16.
        let unit = 0;
        for (let i = 0; i < 4; i++) {
          const d = this.hexDigit(this.peek());
          if (d < 0) {
            this.fail("invalid \\u escape (expected 4 hex digits)");
            return out;
          }
          unit = unit * 16 + d;
          this.pos++;
        }
        out += String.fromCharCode(unit);
      } else {
        this.pos--;
        this.fail("invalid escape '\\" + String.fromCharCode(e) + "'");
        return out;
      }
      runStart = this.pos;
    }
    return out;
  }

  private isDigit(c: i32): bool {
    return c >= 0x30 && c <= 0x39;
  }

  // JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  private parseNumber(): JsonValue {
    const start = this.pos;
    if (this.peek() == 0x2d) this.pos++;
    if (this.peek() == 0x30) {
      this.pos++;
    } else if (this.isDigit(this.peek())) {
      while (this.isDigit(this.peek())) this.pos++;
    } else {
      this.fail("invalid number");
      return new JsonValue(JsonKind.Null);
    }
    if (this.peek() == 0x2e) {
      this.pos++;
      if (!this.isDigit(this.peek())) {
        this.fail("invalid number (digit expected after '.')");
        return new JsonValue(JsonKind.Null);
      }
      while (this.isDigit(this.peek())) this.pos++;
    }
    if (this.peek() == 0x65 || this.peek() == 0x45) {
      this.pos++;
      if (this.peek() == 0x2b || this.peek() == 0x2d) this.pos++;
      if (!this.isDigit(this.peek())) {
        this.fail("invalid number (digit expected in the exponent)");
        return new JsonValue(JsonKind.Null);
      }
      while (this.isDigit(this.peek())) this.pos++;
    }
    const n = new JsonValue(JsonKind.Number);
    n.numValue = parseFloat(this.text.substring(start, this.pos));
    return n;
  }
}
