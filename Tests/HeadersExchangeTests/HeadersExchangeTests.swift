import AMQPProtocol
import HeadersExchange
import NIOCore
import Testing
import WarrenCore

@Suite("Headers exchange")
struct HeadersExchangeTests {
  static func registry() -> ExchangeRegistry {
    var registry = ExchangeRegistry()
    registry.register(HeadersExchangeType())
    return registry
  }

  /// Binding arguments, message headers, whether they match: RabbitMQ's documented semantics.
  static let table: [(FieldTable, FieldTable?, Bool)] = [
    (["a": .longString("1"), "b": .longString("2")], ["a": .longString("1"), "b": .longString("2")], true),
    (["a": .longString("1"), "b": .longString("2")], ["a": .longString("1")], false),
    (["x-match": .longString("any"), "a": .longString("1"), "b": .longString("2")], ["a": .longString("1")], true),
    (["x-match": .longString("any"), "a": .longString("1")], ["a": .longString("9")], false),
    (["x-match": .longString("all")], ["anything": .bool(true)], true),
    (["x-match": .longString("all")], nil, true),
    (["x-match": .longString("any")], ["a": .int32(1)], false),
    (["a": .void], ["a": .longString("whatever")], true),
    (["a": .void], ["b": .longString("whatever")], false),
    (["n": .int8(5)], ["n": .int64(5)], true),
    (["n": .int32(5)], ["n": .longString("5")], false),
    (["f": .double(1.5)], ["f": .float(1.5)], true),
    (["a": .longString("1"), "x-tag": .longString("t")], ["a": .longString("1")], true),
    (["x-match": .longString("all-with-x"), "x-tag": .longString("t")], ["x-tag": .longString("t")], true),
    (["x-match": .longString("all-with-x"), "x-tag": .longString("t")], ["a": .longString("1")], false),
    (
      ["x-match": .longString("any-with-x"), "x-tag": .longString("t"), "a": .bool(true)], ["x-tag": .longString("t")],
      true
    ),
    (["a": .longString("1")], nil, false),
  ]

  @Test("matches as RabbitMQ does", arguments: 0..<Self.table.count)
  func semantics(index: Int) throws {
    let (arguments, headers, matches) = Self.table[index]
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    let exchange = try vhost.declareExchange(name: "h", type: "headers")
    try vhost.declareQueue(name: "q", connection: 1)
    try vhost.bindQueue("q", to: "h", routingKey: "", arguments: arguments, connection: 1)
    let message = Message.make(
      exchange: "h", routingKey: "", properties: BasicProperties(headers: headers), body: ByteBuffer())
    #expect((vhost.publish(message, to: exchange).accepted == 1) == matches, "case \(index)")
  }

  @Test("amq.headers and amq.match are predeclared")
  func predeclared() {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    #expect(vhost.exchanges["amq.headers"]?.type.name == "headers")
    #expect(vhost.exchanges["amq.match"]?.type.name == "headers")
  }

  @Test("a bad x-match is refused with 406")
  func badXMatch() throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    try vhost.declareExchange(name: "h", type: "headers")
    try vhost.declareQueue(name: "q", connection: 1)
    do {
      try vhost.bindQueue("q", to: "h", routingKey: "", arguments: ["x-match": .longString("some")], connection: 1)
      Issue.record("accepted")
    } catch {
      #expect(error.replyCode == 406)
      #expect(
        error.replyText
          == "PRECONDITION_FAILED - Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x"
      )
    }
  }

  @Test("unbinding removes the route")
  func unbind() throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    let exchange = try vhost.declareExchange(name: "h", type: "headers")
    try vhost.declareQueue(name: "q", connection: 1)
    let arguments: FieldTable = ["x-match": .longString("any"), "a": .int32(1), "b": .int32(2)]
    try vhost.bindQueue("q", to: "h", routingKey: "", arguments: arguments, connection: 1)
    let message = Message.make(
      exchange: "h", routingKey: "", properties: BasicProperties(headers: ["a": .int32(1), "b": .int32(2)]),
      body: ByteBuffer())
    #expect(vhost.publish(message, to: exchange).accepted == 1)
    try vhost.unbindQueue("q", from: "h", routingKey: "", arguments: arguments, connection: 1)
    #expect(vhost.publish(message, to: exchange).accepted == 0)
  }
}
