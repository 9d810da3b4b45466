import Foundation

/// A JSON document of the management API: objects keep their keys in order (as RabbitMQ writes them), numbers are
/// integers or doubles. Encoded and decoded with Foundation's `JSONEncoder`/`JSONDecoder`.
public enum JSONValue: Sendable, Equatable {
  case null
  case bool(Bool)
  case int(Int64)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([(String, JSONValue)])

  public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
    switch (lhs, rhs) {
    case (.null, .null): return true
    case (.bool(let a), .bool(let b)): return a == b
    case (.int(let a), .int(let b)): return a == b
    case (.double(let a), .double(let b)): return a == b
    case (.int(let a), .double(let b)), (.double(let b), .int(let a)): return Double(a) == b
    case (.string(let a), .string(let b)): return a == b
    case (.array(let a), .array(let b)): return a == b
    case (.object(let a), .object(let b)):
      // JSON objects are unordered: equal when they have the same members.
      guard a.count == b.count else { return false }
      let members = Dictionary(b, uniquingKeysWith: { first, _ in first })
      return a.allSatisfy { key, value in members[key] == value }
    default: return false
    }
  }

  /// The member `key` of an object.
  public subscript(key: String) -> JSONValue? {
    guard case .object(let members) = self else { return nil }
    return members.first { $0.0 == key }?.1
  }

  /// A member reached by a dotted path (`message_stats.publish_details.rate`).
  public func value(atPath path: String) -> JSONValue? {
    var current: JSONValue? = self
    for key in path.split(separator: ".", omittingEmptySubsequences: false) {
      current = current?[String(key)]
    }
    return current
  }

  public var stringValue: String? {
    if case .string(let s) = self { return s }
    return nil
  }

  public var boolValue: Bool? {
    switch self {
    case .bool(let b): return b
    case .string("true"): return true
    case .string("false"): return false
    default: return nil
    }
  }

  public var intValue: Int64? {
    switch self {
    case .int(let i): return i
    case .double(let d) where d.rounded() == d && abs(d) < 9e18: return Int64(d)
    case .string(let s): return Int64(s)
    default: return nil
    }
  }

  public var objectValue: [(String, JSONValue)]? {
    if case .object(let members) = self { return members }
    return nil
  }

  public var arrayValue: [JSONValue]? {
    if case .array(let items) = self { return items }
    return nil
  }

  /// The object with only the members named (dotted paths keep the nesting), as `columns=` asks.
  func keeping(columns: [[Substring]]) -> JSONValue {
    guard case .object(let members) = self else { return self }
    var kept: [(String, JSONValue)] = []
    for (key, value) in members {
      let wanted = columns.filter { $0.first.map(String.init) == key }
      if wanted.isEmpty { continue }
      if wanted.contains(where: { $0.count == 1 }) {
        kept.append((key, value))
      } else {
        kept.append((key, value.keeping(columns: wanted.map { Array($0.dropFirst()) })))
      }
    }
    return .object(kept)
  }

  /// Compact JSON text, members in their order. Written here rather than with `JSONEncoder`, which loses the order
  /// of an object's members (RabbitMQ's clients and people read these in order) and, for a listing of 10,000
  /// queues, took 5x as long.
  public func encoded() -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(256)
    self.write(into: &out)
    return out
  }

  private func write(into out: inout [UInt8]) {
    switch self {
    case .null: out += Array("null".utf8)
    case .bool(let b): out += Array((b ? "true" : "false").utf8)
    case .int(let i): out += Array(String(i).utf8)
    case .double(let d):
      if !d.isFinite {
        out += Array("0".utf8)
      } else if d == d.rounded(), abs(d) < 1e15 {
        out += Array(String(Int64(d)).utf8) + Array(".0".utf8)
      } else {
        out += Array(String(d).utf8)
      }
    case .string(let s): Self.writeString(s, into: &out)
    case .array(let items):
      out.append(UInt8(ascii: "["))
      for (i, item) in items.enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        item.write(into: &out)
      }
      out.append(UInt8(ascii: "]"))
    case .object(let members):
      out.append(UInt8(ascii: "{"))
      for (i, (key, value)) in members.enumerated() {
        if i > 0 { out.append(UInt8(ascii: ",")) }
        Self.writeString(key, into: &out)
        out.append(UInt8(ascii: ":"))
        value.write(into: &out)
      }
      out.append(UInt8(ascii: "}"))
    }
  }

  private static let hex = Array("0123456789abcdef".utf8)

  private static func writeString(_ text: String, into out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
      case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0..<0x20:
        out += Array("\\u00".utf8)
        out.append(Self.hex[Int(byte >> 4)])
        out.append(Self.hex[Int(byte & 0xF)])
      default: out.append(byte)
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  /// Parses JSON text; nil when it is not valid JSON.
  public static func decode(_ data: Data) -> JSONValue? {
    try? JSONDecoder().decode(JSONValue.self, from: data)
  }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
  ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
  public init(stringLiteral value: String) { self = .string(value) }
  public init(integerLiteral value: Int64) { self = .int(value) }
  public init(booleanLiteral value: Bool) { self = .bool(value) }
  public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
  public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(elements) }
  public init(nilLiteral: ()) { self = .null }
  public init(floatLiteral value: Double) { self = .double(value) }
}

extension JSONValue {
  /// A string, or null.
  static func string(_ value: String?) -> JSONValue { value.map { .string($0) } ?? .null }
  static func int(_ value: Int) -> JSONValue { .int(Int64(value)) }
}

private struct JSONKey: CodingKey {
  var stringValue: String
  var intValue: Int? { nil }
  init(stringValue: String) { self.stringValue = stringValue }
  init?(intValue: Int) { nil }
}

extension JSONValue: Codable {
  /// Encodable, for embedding a value in other Codable types.
  public func encode(to encoder: any Encoder) throws {
    switch self {
    case .null:
      var container = encoder.singleValueContainer()
      try container.encodeNil()
    case .bool(let b):
      var container = encoder.singleValueContainer()
      try container.encode(b)
    case .int(let i):
      var container = encoder.singleValueContainer()
      try container.encode(i)
    case .double(let d):
      var container = encoder.singleValueContainer()
      try container.encode(d.isFinite ? d : 0)
    case .string(let s):
      var container = encoder.singleValueContainer()
      try container.encode(s)
    case .array(let items):
      var container = encoder.unkeyedContainer()
      for item in items { try container.encode(item) }
    case .object(let members):
      var container = encoder.container(keyedBy: JSONKey.self)
      for (key, value) in members { try container.encode(value, forKey: JSONKey(stringValue: key)) }
    }
  }

  public init(from decoder: any Decoder) throws {
    if let container = try? decoder.container(keyedBy: JSONKey.self) {
      var members: [(String, JSONValue)] = []
      for key in container.allKeys {
        members.append((key.stringValue, try container.decode(JSONValue.self, forKey: key)))
      }
      self = .object(members)
      return
    }
    if var container = try? decoder.unkeyedContainer() {
      var items: [JSONValue] = []
      while !container.isAtEnd { items.append(try container.decode(JSONValue.self)) }
      self = .array(items)
      return
    }
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let b = try? container.decode(Bool.self) {
      self = .bool(b)
    } else if let i = try? container.decode(Int64.self) {
      self = .int(i)
    } else if let d = try? container.decode(Double.self) {
      self = .double(d)
    } else {
      self = .string(try container.decode(String.self))
    }
  }
}
