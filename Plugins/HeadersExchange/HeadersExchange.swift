import AMQPProtocol
import WarrenCore

/// `headers`: a message goes to the bindings whose arguments match its headers, as in RabbitMQ. The binding's
/// `x-match` says how: `all` (the default: every argument present with an equal value), `any` (at least one),
/// `all-with-x` and `any-with-x` (the same, counting arguments that start with `x-` too). An argument of type void
/// matches on the header's presence alone. Integers compare by value whatever their width, as do floats.
public struct HeadersExchangeType: ExchangeType {
  public init() {}
  public var name: String { "headers" }
  public var description: String { "AMQP headers exchange, as per the AMQP specification" }
  public var predeclaredExchanges: [String] { ["amq.headers", "amq.match"] }

  public func validate(bindingKey: String, arguments: FieldTable) throws(BrokerError) {
    _ = try HeadersPattern(arguments)
  }

  public func makeRouter(exchangeName: String, arguments: FieldTable) -> any ExchangeRouter {
    HeadersRouter()
  }
}

/// A binding's arguments, parsed for matching.
struct HeadersPattern {
  enum Mode { case all, any }
  let mode: Mode
  /// The arguments that take part in matching.
  let fields: [FieldTable.Entry]

  init(_ arguments: FieldTable) throws(BrokerError) {
    var withX = false
    var mode = Mode.all
    if let value = arguments["x-match"] {
      switch value.stringValue {
      case "all": mode = .all
      case "any": mode = .any
      case "all-with-x": (mode, withX) = (.all, true)
      case "any-with-x": (mode, withX) = (.any, true)
      default:
        let shown = value.stringValue.map { "<<\"\($0)\">>" } ?? QueueArguments.show(value)
        throw .preconditionFailed(
          "Invalid x-match field value \(shown); expected all, any, all-with-x, or any-with-x")
      }
    }
    self.mode = mode
    self.fields = arguments.entries.filter { $0.key != "x-match" && (withX || !$0.key.hasPrefix("x-")) }
  }

  func matches(_ headers: FieldTable) -> Bool {
    switch self.mode {
    case .all:
      return self.fields.allSatisfy { field in headers[field.key].map { Self.equal(field.value, $0) } ?? false }
    case .any:
      return self.fields.contains { field in headers[field.key].map { Self.equal(field.value, $0) } ?? false }
    }
  }

  /// RabbitMQ's comparison: void in the pattern means presence; integers by value; floats by value; otherwise
  /// the same type and value.
  static func equal(_ pattern: FieldValue, _ value: FieldValue) -> Bool {
    if case .void = pattern { return true }
    if let a = pattern.integerValue, let b = value.integerValue { return a == b }
    if let a = floatValue(pattern), let b = floatValue(value) { return a == b }
    return pattern == value
  }

  static func floatValue(_ value: FieldValue) -> Double? {
    switch value {
    case .float(let f): return Double(f)
    case .double(let d): return d
    default: return nil
    }
  }
}

/// The routing index of one headers exchange: bindings indexed by the header names that can make them match,
/// so a message is checked only against bindings that name one of its headers.
public final class HeadersRouter: ExchangeRouter {
  final class Entry {
    let binding: Binding
    let pattern: HeadersPattern
    var checkedEpoch: UInt64 = 0
    init(binding: Binding, pattern: HeadersPattern) {
      self.binding = binding
      self.pattern = pattern
    }
  }

  /// `all` bindings by their first field, `any` bindings by each of their fields.
  private var byHeader: [String: [Entry]] = [:]
  /// `all` bindings without fields: they match every message.
  private var matchAll: [Entry] = []
  private var entries: [Entry] = []
  private var epoch: UInt64 = 0

  public init() {}

  public func bindingAdded(_ binding: Binding) {
    guard let pattern = try? HeadersPattern(binding.arguments) else { return }
    let entry = Entry(binding: binding, pattern: pattern)
    self.entries.append(entry)
    self.index(entry)
  }

  public func bindingRemoved(_ binding: Binding) {
    self.entries.removeAll { $0.binding == binding }
    self.byHeader.removeAll()
    self.matchAll.removeAll()
    for entry in self.entries { self.index(entry) }
  }

  private func index(_ entry: Entry) {
    switch entry.pattern.mode {
    case .all:
      if let first = entry.pattern.fields.first {
        self.byHeader[first.key, default: []].append(entry)
      } else {
        self.matchAll.append(entry)
      }
    case .any:
      for field in entry.pattern.fields { self.byHeader[field.key, default: []].append(entry) }
    }
  }

  public func route(_ input: RoutingInput, into routes: inout RouteSet) {
    for entry in self.matchAll { routes.insert(entry.binding.destination) }
    guard !self.byHeader.isEmpty, let headers = input.message.properties.headers, !headers.isEmpty else { return }
    self.epoch &+= 1
    for header in headers {
      guard let candidates = self.byHeader[header.key] else { continue }
      for entry in candidates where entry.checkedEpoch != self.epoch {
        entry.checkedEpoch = self.epoch
        if entry.pattern.matches(headers) { routes.insert(entry.binding.destination) }
      }
    }
  }
}
