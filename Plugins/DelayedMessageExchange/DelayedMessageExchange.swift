import AMQPProtocol
import WarrenCore

/// `x-delayed-message`: RabbitMQ's community delayed-message exchange. It routes like the type its
/// `x-delayed-type` argument names (direct, topic, headers, ...); a message with a positive `x-delay` header
/// (milliseconds, at most 2^32 - 1) is held until then and routed with the bindings the exchange has at that
/// time, its `x-delay` header turned negative (so that it is not delayed again through another delayed exchange).
///
/// The messages wait in a holding queue the broker keeps for the exchange (``ExchangeContext/holdingQueue(for:)``,
/// named `amq.delayed.` and the exchange's name): on a durable exchange a persistent message is stored before its
/// publish is confirmed and survives a restart. Unlike the plugin, a delayed message counts as routed (no
/// `basic.return` for a mandatory publish: whether a queue will be bound when it is due cannot be known).
public struct DelayedMessageExchangeType: ExchangeType {
  public init() {}

  public var name: String { "x-delayed-message" }
  public var description: String { "Delayed Message Exchange." }

  /// The largest delay: the plugin's (Erlang's longest timer), 2^32 - 1 milliseconds.
  public static let maximumDelay: Int64 = 4_294_967_295

  public func validate(exchangeArguments: FieldTable, registry: ExchangeRegistry) throws(BrokerError) {
    let type = try Self.delayedType(in: exchangeArguments, registry: registry)
    try type.validate(exchangeArguments: exchangeArguments, registry: registry)
  }

  public func validate(bindingKey: String, arguments: FieldTable, exchange: Exchange, registry: ExchangeRegistry)
    throws(BrokerError)
  {
    let type = try Self.delayedType(in: exchange.arguments, registry: registry)
    try type.validate(bindingKey: bindingKey, arguments: arguments, exchange: exchange, registry: registry)
  }

  /// The type an exchange's `x-delayed-type` names: a string naming a registered type other than this one (406
  /// otherwise, 503 for an unknown type, as the plugin answers).
  static func delayedType(in arguments: FieldTable, registry: ExchangeRegistry) throws(BrokerError)
    -> any ExchangeType
  {
    guard let name = arguments["x-delayed-type"]?.stringValue, name != "x-delayed-message" else {
      throw .preconditionFailed("Invalid argument, 'x-delayed-type' must be an existing exchange type")
    }
    guard let type = registry.type(named: name) else { throw .commandInvalid("unknown exchange type '\(name)'") }
    return type
  }

  public func makeRouter(context: ExchangeContext) -> any ExchangeRouter {
    // Declared arguments were validated; a router made without them (or in a test) routes like direct.
    let type =
      (try? Self.delayedType(in: context.arguments, registry: context.registry)) ?? DirectExchangeType()
    return DelayedMessageRouter(context: context, routing: type.makeRouter(context: context))
  }

  /// A message's delay in milliseconds, read as the plugin reads its `x-delay` header: any integer type, a
  /// string of digits, a float truncated; nil without one.
  public static func delay(of message: Message) -> Int64? {
    guard message.hasHeaders, let value = message.properties.headers?["x-delay"] else { return nil }
    if let integer = value.integerValue { return integer }
    switch value {
    case .longString(let text): return Int64(text)
    case .float(let float) where float.isFinite && abs(float) < 9e18: return Int64(float)
    case .double(let double) where double.isFinite && abs(double) < 9e18: return Int64(double)
    case .decimal(let scale, let value):
      var result = Int64(value)
      for _ in 0..<scale { result /= 10 }
      return result
    default: return nil
    }
  }

  /// Whether a message is held: its delay is positive and within the plugin's range.
  public static func isDelayed(_ message: Message) -> Bool {
    guard let delay = Self.delay(of: message) else { return false }
    return delay > 0 && delay <= Self.maximumDelay
  }
}

/// Routes like the delayed type; holds delayed messages in the exchange's holding queue and routes them when due.
final class DelayedMessageRouter: ExchangeRouter, MessageHolder {
  let context: ExchangeContext
  let routing: any ExchangeRouter

  init(context: ExchangeContext, routing: any ExchangeRouter) {
    self.context = context
    self.routing = routing
    context.register(self)  // a holding queue recovered after a restart finds its holder
  }

  func bindingAdded(_ binding: Binding) { self.routing.bindingAdded(binding) }

  func bindingRemoved(_ binding: Binding) { self.routing.bindingRemoved(binding) }

  func exchangeDeleted() {
    self.routing.exchangeDeleted()
    self.context.removeHoldingQueue()  // its messages go with it, as the plugin drops those of a deleted exchange
  }

  func route(_ input: RoutingInput, into routes: inout RouteSet) {
    if DelayedMessageExchangeType.isDelayed(input.message), let queue = self.context.holdingQueue(for: self) {
      routes.insert(queue.asDestination)
    } else {
      self.routing.route(input, into: &routes)
    }
  }

  func dueTime(of message: QueuedMessage) -> UInt64 {
    let delay = DelayedMessageExchangeType.delay(of: message.message) ?? 0
    return message.enqueuedAt &+ UInt64(clamping: delay) &* 1_000_000
  }

  /// Due: routed from the exchange with `x-delay` negated, as the plugin does.
  func release(_ message: Message) {
    var properties = message.properties
    var headers = properties.headers ?? [:]
    let delay = DelayedMessageExchangeType.delay(of: message) ?? 0
    headers["x-delay"] = Int32(exactly: -delay).map(FieldValue.int32) ?? .int64(-delay)
    properties.headers = headers
    self.context.publish(
      Message.make(
        exchange: message.exchange, routingKey: message.routingKey, properties: properties, body: message.body))
  }
}
