import AMQPProtocol
import NIOCore
import Testing

@testable import WarrenCore

/// A consumer's channel that records deliveries, keeps each consumer's prefetch credit as a server channel does, and
/// can be told to refuse deliveries.
final class RecordingChannel: DeliveryChannel {
  var delivered: [(consumer: String, body: String, redelivered: Bool)] = []
  var deliveredMessages: [QueuedMessage] = []
  var cancelled: [String] = []
  var accepting = true

  func canDeliver(to consumer: Consumer) -> Bool { self.accepting && consumer.hasCapacity }
  func deliver(_ message: QueuedMessage, from queue: Queue, to consumer: Consumer) {
    if !consumer.noAck { consumer.unacked += 1 }
    self.delivered.append((consumer.tag, String(buffer: message.message.body), message.redelivered))
    self.deliveredMessages.append(message)
  }
  func consumerCancelledByServer(_ consumer: Consumer) { self.cancelled.append(consumer.tag) }
}

func message(_ body: String, key: String = "", exchange: String = "") -> Message {
  Message.make(exchange: exchange, routingKey: key, body: ByteBuffer(string: body))
}

@Suite("Routing")
struct RoutingTests {
  @Test("the default exchange routes by queue name")
  func defaultExchange() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let queue = try vhost.declareQueue(name: "q", connection: 1)
    #expect(vhost.publish(message("a", key: "q"), to: vhost.defaultExchange).accepted == 1)
    #expect(vhost.publish(message("b", key: "other"), to: vhost.defaultExchange).accepted == 0)
    #expect(queue.messageCount == 1)
  }

  @Test("direct routes on equal keys only; several bindings to one queue deliver one copy")
  func direct() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let exchange = try vhost.declareExchange(name: "d", type: "direct")
    let a = try vhost.declareQueue(name: "a", connection: 1)
    let b = try vhost.declareQueue(name: "b", connection: 1)
    try vhost.bindQueue("a", to: "d", routingKey: "red", connection: 1)
    try vhost.bindQueue("a", to: "d", routingKey: "red", arguments: ["x": .int32(1)], connection: 1)
    try vhost.bindQueue("b", to: "d", routingKey: "blue", connection: 1)
    #expect(vhost.publish(message("1", key: "red"), to: exchange).accepted == 1)
    #expect(vhost.publish(message("2", key: "blue"), to: exchange).accepted == 1)
    #expect(vhost.publish(message("3", key: "green"), to: exchange).accepted == 0)
    #expect(a.messageCount == 1 && b.messageCount == 1)
    try vhost.unbindQueue("a", from: "d", routingKey: "red", connection: 1)
    #expect(vhost.publish(message("4", key: "red"), to: exchange).accepted == 1)  // the binding with arguments remains
    try vhost.unbindQueue("a", from: "d", routingKey: "red", arguments: ["x": .int32(1)], connection: 1)
    #expect(vhost.publish(message("5", key: "red"), to: exchange).accepted == 0)
  }

  @Test("fanout routes to every bound queue")
  func fanout() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let exchange = try vhost.declareExchange(name: "f", type: "fanout")
    for name in ["a", "b", "c"] {
      try vhost.declareQueue(name: name, connection: 1)
      try vhost.bindQueue(name, to: "f", routingKey: name, connection: 1)
    }
    #expect(vhost.publish(message("x", key: "anything"), to: exchange).accepted == 3)
  }

  @Test("exchange-to-exchange bindings: one copy per queue, cycles end")
  func exchangeToExchange() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let source = try vhost.declareExchange(name: "s", type: "direct")
    try vhost.declareExchange(name: "m", type: "fanout")
    try vhost.bindExchange(destination: "m", source: "s", routingKey: "k")
    try vhost.bindExchange(destination: "s", source: "m", routingKey: "k")
    let queue = try vhost.declareQueue(name: "q", connection: 1)
    try vhost.bindQueue("q", to: "m", routingKey: "", connection: 1)
    try vhost.bindQueue("q", to: "s", routingKey: "k", connection: 1)
    #expect(vhost.publish(message("x", key: "k"), to: source).accepted == 1)
    #expect(queue.messageCount == 1)
  }

  @Test("an unroutable message goes to the alternate exchange")
  func alternateExchange() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    try vhost.declareExchange(name: "ae", type: "fanout")
    let main = try vhost.declareExchange(
      name: "main", type: "direct", arguments: ["alternate-exchange": .longString("ae")])
    let unrouted = try vhost.declareQueue(name: "unrouted", connection: 1)
    try vhost.bindQueue("unrouted", to: "ae", routingKey: "", connection: 1)
    #expect(vhost.publish(message("x", key: "nobody"), to: main).accepted == 1)
    #expect(unrouted.messageCount == 1)
  }

  @Test("an auto-delete exchange goes with its last binding")
  func autoDeleteExchange() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    try vhost.declareExchange(name: "tmp", type: "direct", autoDelete: true)
    try vhost.declareQueue(name: "q", connection: 1)
    try vhost.bindQueue("q", to: "tmp", routingKey: "k", connection: 1)
    #expect(vhost.exchanges["tmp"] != nil)
    try vhost.unbindQueue("q", from: "tmp", routingKey: "k", connection: 1)
    #expect(vhost.exchanges["tmp"] == nil)
  }
}

@Suite("Declarations")
struct DeclarationTests {
  func code(_ body: () throws -> Void) -> UInt16? {
    do {
      try body()
      return nil
    } catch let error as BrokerError {
      return error.replyCode
    } catch {
      return 0
    }
  }

  @Test("RabbitMQ's reply codes for declare mistakes")
  func declareErrors() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    #expect(code { try vhost.declareExchange(name: "x", type: "nonsense") } == 503)
    #expect(code { try vhost.declareExchange(name: "amq.mine", type: "direct") } == 403)
    #expect(code { try vhost.declareExchange(name: "amq.direct", type: "direct", durable: true) } == nil)
    #expect(code { try vhost.declareExchange(name: "amq.direct", type: "fanout", durable: true) } == 406)
    #expect(code { try vhost.declareExchange(name: "", type: "direct") } == 403)
    #expect(code { try vhost.declareExchange(name: "missing", type: "direct", passive: true) } == 404)
    #expect(code { try vhost.declareQueue(name: "amq.q", connection: 1) } == 403)
    #expect(code { try vhost.declareQueue(name: "missing", passive: true, connection: 1) } == 404)
    #expect(
      code { try vhost.declareQueue(name: "ttl", arguments: ["x-message-ttl": .int32(-1)], connection: 1) } == 406)
    #expect(code { try vhost.declareQueue(name: "q", durable: false, connection: 1) } == nil)
    #expect(code { try vhost.declareQueue(name: "q", durable: true, connection: 1) } == 406)
    #expect(code { try vhost.declareQueue(name: "mine", exclusive: true, connection: 1) } == nil)
    #expect(code { try vhost.declareQueue(name: "mine", exclusive: true, connection: 2) } == 405)
    #expect(code { try vhost.bindQueue("q", to: "", routingKey: "q", connection: 1) } == 403)
    #expect(code { try vhost.bindQueue("q", to: "missing", routingKey: "q", connection: 1) } == 404)
    #expect(code { try vhost.deleteExchange(name: "amq.fanout") } == 403)
  }

  @Test("server-named queues are amq.gen- and unique")
  func serverNamed() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let names = try (0..<100).map { _ throws(BrokerError) in try vhost.declareQueue(name: "", connection: 1).name }
    #expect(Set(names).count == 100)
    #expect(names.allSatisfy { $0.hasPrefix("amq.gen-") && $0.count == 30 })
  }

  @Test("delete if-unused and if-empty")
  func conditionalDelete() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let queue = try vhost.declareQueue(name: "q", connection: 1)
    queue.enqueue(message("x"))
    #expect(code { _ = try vhost.deleteQueue(name: "q", ifEmpty: true, connection: 1) } == 406)
    let channel = RecordingChannel()
    channel.accepting = false
    try vhost.addConsumer(
      Consumer(tag: "c", queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel))
    #expect(code { _ = try vhost.deleteQueue(name: "q", ifUnused: true, connection: 1) } == 406)
    #expect(try vhost.deleteQueue(name: "q", connection: 1) == 1)
    #expect(channel.cancelled == ["c"])
    #expect(try vhost.deleteQueue(name: "q", connection: 1) == 0)  // idempotent
  }
}

@Suite("Queues")
struct QueueTests {
  func setup() throws -> (VirtualHost, Queue) {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    return (vhost, try vhost.declareQueue(name: "q", connection: 1))
  }

  @Test("consumers get messages in turn")
  func roundRobin() throws {
    let (vhost, queue) = try setup()
    let channel = RecordingChannel()
    for tag in ["a", "b", "c"] {
      try vhost.addConsumer(
        Consumer(tag: tag, queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel))
    }
    for i in 0..<6 { queue.enqueue(message("\(i)")) }
    #expect(channel.delivered.map(\.consumer) == ["a", "b", "c", "a", "b", "c"])
    #expect(channel.delivered.map(\.body) == ["0", "1", "2", "3", "4", "5"])
  }

  @Test("prefetch stops deliveries; a settlement lets the next one go")
  func prefetch() throws {
    let (vhost, queue) = try setup()
    let channel = RecordingChannel()
    let consumer = Consumer(tag: "c", queue: queue, noAck: false, exclusive: false, prefetchCount: 2, channel: channel)
    try vhost.addConsumer(consumer)
    for i in 0..<5 { queue.enqueue(message("\(i)")) }
    #expect(channel.delivered.count == 2)
    #expect(queue.messageCount == 3 && queue.unackedCount == 2)
    #expect(queue.unackedBytes == 2 && queue.storage.bytes == 3)
    queue.settle(channel.deliveredMessages[0])
    consumer.unacked -= 1
    queue.dispatch()
    #expect(channel.delivered.count == 3)
    #expect(queue.unackedCount == 2 && queue.unackedBytes == 2 && queue.storage.bytes == 2)
    #expect(queue.messagesPublished == 5)
  }

  @Test("requeued messages go back to their places, marked redelivered")
  func requeueOrder() throws {
    let (_, queue) = try setup()
    for i in 0..<5 { queue.enqueue(message("\(i)")) }
    let taken = (0..<4).map { _ in queue.get(noAck: false)! }
    // Requeue 3 and 1 (out of order), then 0 later: each lands at its original position.
    queue.requeue([taken[3], taken[1]])
    queue.requeue([taken[0]])
    var bodies: [String] = []
    while let m = queue.get(noAck: true) { bodies.append(String(buffer: m.message.body) + (m.redelivered ? "r" : "")) }
    #expect(bodies == ["0r", "1r", "3r", "4"])
  }

  @Test("an exclusive consumer keeps others out")
  func exclusiveConsumer() throws {
    let (vhost, queue) = try setup()
    let channel = RecordingChannel()
    try vhost.addConsumer(
      Consumer(tag: "a", queue: queue, noAck: true, exclusive: true, prefetchCount: 0, channel: channel))
    #expect(throws: BrokerError.self) {
      try vhost.addConsumer(
        Consumer(tag: "b", queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel))
    }
  }

  @Test("an auto-delete queue goes with its last consumer; exclusive queues with their connection")
  func autoDelete() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let queue = try vhost.declareQueue(name: "auto", autoDelete: true, connection: 1)
    let channel = RecordingChannel()
    let a = Consumer(tag: "a", queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel)
    let b = Consumer(tag: "b", queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel)
    try vhost.addConsumer(a)
    try vhost.addConsumer(b)
    vhost.removeConsumer(a)
    #expect(vhost.queues["auto"] != nil)
    vhost.removeConsumer(b)
    #expect(vhost.queues["auto"] == nil)
    try vhost.declareQueue(name: "mine", exclusive: true, connection: 7)
    vhost.removeExclusiveQueues(of: 7)
    #expect(vhost.queues["mine"] == nil)
  }

  @Test("a message routed to many queues is stored once")
  func sharedBody() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let exchange = try vhost.declareExchange(name: "f", type: "fanout")
    var queues: [Queue] = []
    for i in 0..<3 {
      queues.append(try vhost.declareQueue(name: "q\(i)", connection: 1))
      try vhost.bindQueue("q\(i)", to: "f", routingKey: "", connection: 1)
    }
    let m = message("shared")
    vhost.publish(m, to: exchange)
    for q in queues { #expect(q.get(noAck: true)!.message === m) }
  }
}

final class RecordingPublisher: FlowControlledPublisher {
  var heldBack = 0
  var resumed = 0
  func holdBackPublishing() { self.heldBack += 1 }
  func resumePublishing() { self.resumed += 1 }
}

@Suite("Flow control")
struct FlowControlTests {
  @Test("a queue whose consumers fall behind holds its publishers back until it catches up")
  func holdBackAndResume() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let queue = try vhost.declareQueue(name: "q", connection: 1)
    let channel = RecordingChannel()
    channel.accepting = false  // a consumer whose socket is full
    try vhost.addConsumer(
      Consumer(tag: "c", queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel))
    let publisher = RecordingPublisher()
    for i in 0...Queue.flowHighWatermark {
      vhost.publish(message("\(i)", key: "q"), to: vhost.defaultExchange, publisher: publisher)
    }
    #expect(publisher.heldBack == 1)
    #expect(publisher.resumed == 0)
    channel.accepting = true
    queue.dispatch()
    #expect(publisher.resumed == 1)
    #expect(channel.delivered.count == Queue.flowHighWatermark + 1)
  }

  @Test("a queue without consumers never holds publishers back")
  func noConsumers() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    try vhost.declareQueue(name: "q", connection: 1)
    let publisher = RecordingPublisher()
    for i in 0..<(2 * Queue.flowHighWatermark) {
      vhost.publish(message("\(i)", key: "q"), to: vhost.defaultExchange, publisher: publisher)
    }
    #expect(publisher.heldBack == 0)
  }
}

@Suite("Users")
struct UserTests {
  @Test("guest logs in from loopback only; wrong passwords and unknown users are refused")
  func guestLoopbackOnly() {
    let broker = Broker()
    #expect(broker.authenticate(user: "guest", password: "guest", fromLoopback: true)?.name == "guest")
    #expect(broker.authenticate(user: "guest", password: "guest", fromLoopback: false) == nil)
    #expect(broker.authenticate(user: "guest", password: "nope", fromLoopback: true) == nil)
    #expect(broker.authenticate(user: "nobody", password: "guest", fromLoopback: true) == nil)
    broker.users["app"] = User(name: "app", password: "s3cret")
    #expect(broker.authenticate(user: "app", password: "s3cret", fromLoopback: false)?.name == "app")
  }
}

@Suite("Virtual hosts")
struct VirtualHostRemovalTests {
  @Test("a removed vhost is freed with its queues and exchanges, and its permissions go")
  func removal() throws {
    var registry = ExchangeRegistry()
    registry.register(DirectExchangeType())
    registry.register(FanoutExchangeType())
    let broker = Broker(registry: registry)
    weak var removed: VirtualHost?
    weak var queue: Queue?
    weak var exchange: Exchange?
    do {
      let vhost = broker.addVirtualHost("v")
      removed = vhost
      queue = try vhost.declareQueue(name: "q", durable: true, connection: 0)
      exchange = try vhost.declareExchange(name: "x", type: "fanout")
      try vhost.bindQueue("q", to: "x", routingKey: "", connection: 0)
      broker.permissions["guest", default: [:]]["v"] = Permission()
    }
    broker.removeVirtualHost("v")
    #expect(broker.vhosts["v"] == nil)
    #expect(broker.permissions["guest"]?["v"] == nil)
    #expect(removed == nil)
    #expect(queue == nil)
    #expect(exchange == nil)
  }
}

@Suite("Route cache")
struct RouteCacheTests {
  @Test("a cached route follows every topology change")
  func followsChanges() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let exchange = try vhost.declareExchange(name: "d", type: "direct")
    let a = try vhost.declareQueue(name: "a", connection: 1)
    let b = try vhost.declareQueue(name: "b", connection: 1)
    try vhost.bindQueue("a", to: "d", routingKey: "k", connection: 1)
    var cache = RouteCache()
    func send() -> Int {
      vhost.publish(message("m", key: "k"), routingKey: "k", to: exchange, publisher: nil, cache: &cache).accepted
    }
    #expect(send() == 1)
    #expect(send() == 1)  // from the cache
    #expect(a.messageCount == 2)
    try vhost.bindQueue("b", to: "d", routingKey: "k", connection: 1)
    #expect(send() == 2)  // two queues now: not cached, both get it
    try vhost.unbindQueue("a", from: "d", routingKey: "k", connection: 1)
    #expect(send() == 1)
    #expect(send() == 1)
    #expect(a.messageCount == 3 && b.messageCount == 3)
    _ = try vhost.deleteQueue(name: "b", connection: 1)
    #expect(send() == 0)
    // The default exchange: a queue declared later is found.
    var defaultCache = RouteCache()
    #expect(
      vhost.publish(message("x"), routingKey: "late", to: vhost.defaultExchange, publisher: nil, cache: &defaultCache)
        .accepted == 0)
    let late = try vhost.declareQueue(name: "late", connection: 1)
    #expect(
      vhost.publish(message("x"), routingKey: "late", to: vhost.defaultExchange, publisher: nil, cache: &defaultCache)
        .accepted == 1)
    #expect(late.messageCount == 1)
  }
}

@Suite("Sender-selected distribution")
struct SenderSelectedTests {
  @Test("CC and BCC add routing keys; BCC is removed from what is delivered, CC is kept")
  func ccAndBcc() throws {
    let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let exchange = try vhost.declareExchange(name: "d", type: "direct")
    var queues: [String: Queue] = [:]
    for name in ["main", "copy", "hidden"] {
      queues[name] = try vhost.declareQueue(name: name, connection: 1)
      try vhost.bindQueue(name, to: "d", routingKey: name, connection: 1)
    }
    let properties = BasicProperties(headers: [
      "CC": .array([.longString("copy")]), "BCC": .array([.longString("hidden"), .longString("main")]),
      "other": .int32(1),
    ])
    let m = Message.make(exchange: "d", routingKey: "main", properties: properties, body: ByteBuffer(string: "x"))
    #expect(vhost.publish(m, to: exchange).accepted == 3)  // main once, though named twice
    for queue in queues.values {
      let delivered = try #require(queue.get(noAck: true)).message
      let headers = try #require(delivered.properties.headers)
      #expect(headers["BCC"] == nil)
      #expect(headers["CC"] == .array([.longString("copy")]))
      #expect(headers["other"] == .int32(1))
      #expect(String(buffer: delivered.body) == "x")
    }
    // The default exchange takes CC too.
    let cc = Message.make(
      exchange: "", routingKey: "main", properties: BasicProperties(headers: ["CC": .array([.longString("copy")])]),
      body: ByteBuffer())
    #expect(vhost.publish(cc, to: vhost.defaultExchange).accepted == 2)
  }
}

@Suite("Resource alarms")
struct ResourceAlarmTests {
  @Test("the memory alarm follows the held bytes with hysteresis; resident memory is a backstop")
  func memory() {
    var alarms = ResourceAlarms(memoryLimit: 1000)
    #expect(!alarms.memoryAlarm(held: 1000, resident: 1400))
    #expect(alarms.memoryAlarm(held: 1001, resident: 0))
    #expect(alarms.memoryAlarm(held: 0, resident: 1501))  // what the accounting does not see
    alarms.memory = true
    #expect(alarms.memoryAlarm(held: 950, resident: 0))  // still above 0.9 of the limit
    #expect(!alarms.memoryAlarm(held: 899, resident: 1400))  // cleared, though RSS stays high
    #expect(!ResourceAlarms(memoryLimit: 0).memoryAlarm(held: .max, resident: .max))  // no limit, no alarm
  }
}

@Suite("Lifetimes")
struct LifetimeTests {
  @Test("removing a vhost's contents frees its queues and exchanges (bindings refer to both; found by the fuzzer)")
  func removeAllBreaksCycles() throws {
    weak var queue: Queue?
    weak var exchange: Exchange?
    do {
      let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
      let q = try vhost.declareQueue(name: "q", connection: 1)
      let x = try vhost.declareExchange(name: "x", type: "direct")
      try vhost.bindQueue("q", to: "x", routingKey: "k", connection: 1)
      try vhost.bindExchange(destination: "x", source: "amq.direct", routingKey: "k")
      queue = q
      exchange = x
      vhost.removeAll()
      #expect(vhost.queues.isEmpty && vhost.exchanges.keys.sorted() == [""])
    }
    #expect(queue == nil && exchange == nil)
  }
}
