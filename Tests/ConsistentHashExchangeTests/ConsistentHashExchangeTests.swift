import AMQPProtocol
import ConsistentHashExchange
import NIOCore
import Testing
import WarrenCore

@Suite("Consistent hash exchange")
struct ConsistentHashExchangeTests {
  static func registry() -> ExchangeRegistry {
    var registry = ExchangeRegistry()
    registry.register(ConsistentHashExchangeType())
    return registry
  }

  @Test("100,000 keys over 4 queues with weights 1:1:2:4 land within a few percent of the weights")
  func distribution() throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    let exchange = try vhost.declareExchange(name: "hash", type: "x-consistent-hash")
    let weights = [1, 1, 2, 4]
    var queues: [Queue] = []
    for (i, weight) in weights.enumerated() {
      queues.append(try vhost.declareQueue(name: "q\(i)", connection: 1))
      try vhost.bindQueue("q\(i)", to: "hash", routingKey: "\(weight)", connection: 1)
    }
    let total = 100_000
    for i in 0..<total {
      #expect(
        vhost.publish(Message.make(exchange: "hash", routingKey: "key-\(i)", body: ByteBuffer()), to: exchange).accepted
          == 1)
    }
    let weightSum = Double(weights.reduce(0, +))
    for (queue, weight) in zip(queues, weights) {
      let expected = Double(total) * Double(weight) / weightSum
      let actual = Double(queue.messageCount)
      #expect(abs(actual - expected) / expected < 0.05, "\(queue.name): \(actual) messages, expected about \(expected)")
    }
  }

  @Test("the same key always goes to the same queue; removing a queue moves only its keys")
  func consistency() throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    let exchange = try vhost.declareExchange(name: "hash", type: "x-consistent-hash")
    for i in 0..<3 {
      try vhost.declareQueue(name: "q\(i)", connection: 1)
      try vhost.bindQueue("q\(i)", to: "hash", routingKey: "1", connection: 1)
    }
    func owner(_ key: String) -> String {
      vhost.publish(Message.make(exchange: "hash", routingKey: key, body: ByteBuffer()), to: exchange)
      for (name, queue) in vhost.queues where queue.messageCount > 0 {
        _ = queue.purge()
        return name
      }
      return ""
    }
    let keys = (0..<2000).map { "k\($0)" }
    let before = keys.map(owner)
    #expect(keys.map(owner) == before)
    try vhost.unbindQueue("q2", from: "hash", routingKey: "1", connection: 1)
    let after = keys.map(owner)
    for (b, a) in zip(before, after) where b != "q2" { #expect(a == b) }
    #expect(!after.contains("q2"))
  }

  @Test("hash-header routes by a header; bad weights and arguments are 406")
  func headerAndValidation() throws {
    let vhost = VirtualHost(name: "/", registry: Self.registry())
    let exchange = try vhost.declareExchange(
      name: "byheader", type: "x-consistent-hash", arguments: ["hash-header": .longString("user")])
    try vhost.declareQueue(name: "a", connection: 1)
    try vhost.declareQueue(name: "b", connection: 1)
    try vhost.bindQueue("a", to: "byheader", routingKey: "1", connection: 1)
    try vhost.bindQueue("b", to: "byheader", routingKey: "1", connection: 1)
    func send(_ user: String?, key: String) -> Int {
      let properties = BasicProperties(headers: user.map { ["user": .longString($0)] })
      return vhost.publish(
        Message.make(exchange: "byheader", routingKey: key, properties: properties, body: ByteBuffer()), to: exchange
      ).accepted
    }
    // The routing key does not matter, the header does.
    for i in 0..<50 { #expect(send("alice", key: "r\(i)") == 1) }
    let counts = [vhost.queues["a"]!.messageCount, vhost.queues["b"]!.messageCount].sorted()
    #expect(counts == [0, 50])
    #expect(send(nil, key: "x") == 0)
    #expect(throws: BrokerError.self) { try vhost.bindQueue("a", to: "byheader", routingKey: "heavy", connection: 1) }
    #expect(throws: BrokerError.self) {
      try vhost.declareExchange(
        name: "bad", type: "x-consistent-hash", arguments: ["hash-property": .longString("body")])
    }
  }
}
