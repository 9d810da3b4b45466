import AMQPProtocol
import NIOCore
import Testing
import TopicExchange
import WarrenCore

@Suite("Topic exchange")
struct TopicExchangeTests {
  /// Binding key, routing key, whether it matches: RabbitMQ's documented semantics.
  static let table: [(String, String, Bool)] = [
    ("a.b.c", "a.b.c", true), ("a.b.c", "a.b", false), ("a.b.c", "a.b.c.d", false),
    ("*.b.*", "a.b.c", true), ("*.b.*", "a.b", false), ("*.b.*", "a.b.c.d", false),
    ("#", "", true), ("#", "a", true), ("#", "a.b.c", true),
    ("a.#", "a", true), ("a.#", "a.b", true), ("a.#", "a.b.c", true), ("a.#", "b.a", false),
    ("#.c", "c", true), ("#.c", "a.c", true), ("#.c", "a.b.c", true), ("#.c", "c.a", false),
    ("a.*.#", "a", false), ("a.*.#", "a.b", true), ("a.*.#", "a.b.c.d", true),
    ("", "", true), ("", "a", false), ("*", "", false), ("*", "a", true), ("*", "a.b", false),
    ("a.*.b", "a..b", true), ("a..b", "a..b", true), ("a..b", "a.x.b", false), ("*.*", ".", true),
    ("#.#", "", true), ("#.#", "a.b", true), ("a.#.b", "a.b", true), ("a.#.b", "a.x.y.b", true),
    ("a.#.b", "a.x.y.c", false), ("#.b.#", "b", true), ("#.b.#", "a.b.c", true), ("#.b.#", "a.c", false),
    ("stock.usd.nyse", "stock.usd.nyse", true), ("stock.*.nyse", "stock.eur.nyse", true),
    ("stock.#", "stock", true), ("*.orange.*", "quick.orange.rabbit", true),
    ("*.*.rabbit", "lazy.orange.elephant", false),
    ("lazy.#", "lazy.orange.male.rabbit", true), ("*.orange.*", "quick.orange.male.rabbit", false),
  ]

  @Test("matches as RabbitMQ does", arguments: Self.table)
  func semantics(binding: String, key: String, matches: Bool) throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    let exchange = try vhost.declareExchange(name: "t", type: "topic")
    let queue = try vhost.declareQueue(name: "q", connection: 1)
    try vhost.bindQueue("q", to: "t", routingKey: binding, connection: 1)
    let routed = vhost.publish(Message.make(exchange: "t", routingKey: key, body: ByteBuffer()), to: exchange).accepted
    #expect((routed == 1) == matches, "binding '\(binding)' routing key '\(key)'")
    #expect(queue.messageCount == (matches ? 1 : 0))
  }

  static func registry() -> ExchangeRegistry {
    var registry = ExchangeRegistry()
    registry.register(TopicExchangeType())
    return registry
  }

  @Test("amq.topic is predeclared when the plugin is registered")
  func predeclared() {
    #expect(VirtualHost(name: "/", registry: Self.registry()).exchanges["amq.topic"]?.type.name == "topic")
    #expect(VirtualHost(name: "/", registry: ExchangeRegistry()).exchanges["amq.topic"] == nil)
  }

  @Test("overlapping bindings deliver one copy; unbinding prunes the trie")
  func overlapAndRemoval() throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    let exchange = try vhost.declareExchange(name: "t", type: "topic")
    let queue = try vhost.declareQueue(name: "q", connection: 1)
    for key in ["a.*", "a.#", "#", "*.b"] { try vhost.bindQueue("q", to: "t", routingKey: key, connection: 1) }
    #expect(
      vhost.publish(Message.make(exchange: "t", routingKey: "a.b", body: ByteBuffer()), to: exchange).accepted == 1)
    #expect(queue.messageCount == 1)
    let router = try #require(exchange.router as? TopicRouter)
    #expect(router.keyCount == 4)
    for key in ["a.*", "a.#", "#", "*.b"] { try vhost.unbindQueue("q", from: "t", routingKey: key, connection: 1) }
    #expect(router.keyCount == 0)
    #expect(
      vhost.publish(Message.make(exchange: "t", routingKey: "a.b", body: ByteBuffer()), to: exchange).accepted == 0)
  }

  @Test("binding keys over 255 bytes are refused")
  func longKey() throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    try vhost.declareExchange(name: "t", type: "topic")
    try vhost.declareQueue(name: "q", connection: 1)
    #expect(throws: BrokerError.self) {
      try vhost.bindQueue("q", to: "t", routingKey: String(repeating: "a", count: 256), connection: 1)
    }
  }
}
