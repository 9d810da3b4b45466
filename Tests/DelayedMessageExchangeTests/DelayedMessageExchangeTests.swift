import AMQPProtocol
import DelayedMessageExchange
import Logging
import NIOCore
import Testing
import TopicExchange
import WarrenCore
import WarrenStore

/// A broker clock that stands still at the system's uptime when it was made, `skew` nanoseconds later (time
/// passes by moving the skew; the store converts record times with the system's clocks, so a restart sees about
/// the same uptime), and queue timers fired by hand.
final class SkewedTime: QueueTimers {
  let base = NIODeadline.now().uptimeNanoseconds
  var skew: UInt64 = 0
  var pending: [(queue: Queue, deadline: UInt64)] = []
  lazy var clock = BrokerClock(source: { [weak self] in .uptimeNanoseconds((self?.base ?? 0) + (self?.skew ?? 0)) })

  func schedule(_ queue: Queue, at deadline: UInt64) { self.pending.append((queue, deadline)) }

  /// Time passes; then the timers due fire, as the event loop would, until none is due.
  func advance(milliseconds: UInt64) {
    self.skew += milliseconds * 1_000_000
    while true {
      let now = self.clock.refresh().uptimeNanoseconds
      let due = self.pending.filter { $0.deadline <= now }
      guard !due.isEmpty else { return }
      self.pending.removeAll { $0.deadline <= now }
      for (queue, deadline) in due { queue.timerFired(deadline: deadline) }
    }
  }
}

func registry() -> ExchangeRegistry {
  var registry = ExchangeRegistry()
  registry.register(TopicExchangeType())
  registry.register(DelayedMessageExchangeType())
  return registry
}

func message(_ body: String, key: String = "k", delay: FieldValue?, persistent: Bool = false) -> Message {
  var properties = BasicProperties()
  if let delay { properties.headers = ["x-delay": delay, "other": .longString("kept")] }
  if persistent { properties.deliveryMode = 2 }
  return Message.make(exchange: "later", routingKey: key, properties: properties, body: ByteBuffer(string: body))
}

func bodies(_ queue: Queue) -> [String] {
  var bodies: [String] = []
  while let queued = queue.get(noAck: true) { bodies.append(String(buffer: queued.message.body)) }
  return bodies
}

@Suite("Delayed-message exchange")
struct DelayedMessageExchangeTests {
  let time = SkewedTime()
  let vhost: VirtualHost
  let queue: Queue

  init() throws {
    self.vhost = VirtualHost(name: "/", registry: registry(), clock: self.time.clock)
    self.vhost.timers = self.time
    try self.vhost.declareExchange(
      name: "later", type: "x-delayed-message", arguments: ["x-delayed-type": .longString("direct")])
    self.queue = try self.vhost.declareQueue(name: "q", connection: 1)
    try self.vhost.bindQueue("q", to: "later", routingKey: "k", connection: 1)
  }

  func publish(_ message: Message) -> PublishOutcome {
    self.vhost.publish(message, to: self.vhost.exchanges["later"]!)
  }

  @Test("declaring needs x-delayed-type naming another registered type, with the plugin's codes")
  func declareChecks() throws {
    func code(_ arguments: FieldTable) -> UInt16? {
      do {
        try self.vhost.declareExchange(name: "x", type: "x-delayed-message", arguments: arguments)
        return nil
      } catch { return error.replyCode }
    }
    #expect(code([:]) == 406)
    #expect(code(["x-delayed-type": .int32(1)]) == 406)
    #expect(code(["x-delayed-type": .longString("x-delayed-message")]) == 406)
    #expect(code(["x-delayed-type": .longString("nonesuch")]) == 503)
    #expect(code(["x-delayed-type": .longString("topic")]) == nil)
  }

  @Test("a message without a positive x-delay is routed at once, like the delayed type routes it")
  func undelayed() {
    for delay: FieldValue? in [nil, .int32(0), .int32(-5), .longString("soon"), .int64(1 << 40)] {
      #expect(self.publish(message("now", delay: delay)).accepted == 1)
    }
    #expect(self.publish(message("elsewhere", key: "other", delay: nil)).isUnroutable)
    #expect(bodies(self.queue) == ["now", "now", "now", "now", "now"])
    #expect(self.vhost.queues["amq.delayed.later"] == nil)  // made on the first delayed message only
  }

  @Test("delayed messages arrive in the order they are due, with x-delay negated and other headers kept")
  func dueOrder() throws {
    #expect(self.publish(message("third", delay: .int32(300))).accepted == 1)  // held counts as routed
    _ = self.publish(message("first", delay: .longString("100")))
    _ = self.publish(message("second", delay: .double(200.7)))
    _ = self.publish(message("also first", delay: .int64(100)))
    let holding = try #require(self.vhost.queues["amq.delayed.later"])
    #expect(holding.isHolding && holding.messageCount == 4 && self.queue.messageCount == 0)
    self.time.advance(milliseconds: 99)
    #expect(self.queue.messageCount == 0)
    self.time.advance(milliseconds: 1)
    let first = try #require(self.queue.get(noAck: true))
    #expect(String(buffer: first.message.body) == "first")
    #expect(first.message.properties.headers?["x-delay"] == .int32(-100))
    #expect(first.message.properties.headers?["other"] == .longString("kept"))
    #expect(bodies(self.queue) == ["also first"])
    self.time.advance(milliseconds: 250)
    #expect(bodies(self.queue) == ["second", "third"])
    #expect(holding.messageCount == 0)
  }

  @Test("a held message is routed with the bindings of the time it is due")
  func bindingsWhenDue() throws {
    _ = self.publish(message("late", key: "new", delay: .int32(50)))
    let other = try self.vhost.declareQueue(name: "other", connection: 1)
    try self.vhost.bindQueue("other", to: "later", routingKey: "new", connection: 1)
    self.time.advance(milliseconds: 50)
    #expect(bodies(other) == ["late"])
  }

  @Test("clients cannot declare, consume from, bind, purge or delete the holding queue")
  func holdingQueueIsTheBrokers() throws {
    _ = self.publish(message("held", delay: .int32(1000)))
    #expect(throws: BrokerError.self) { try self.vhost.declareQueue(name: "amq.delayed.later", connection: 1) }
    #expect(throws: BrokerError.self) {
      try self.vhost.declareQueue(name: "amq.delayed.later", passive: true, connection: 1)
    }
    #expect(throws: BrokerError.self) {
      try self.vhost.bindQueue("amq.delayed.later", to: "later", routingKey: "k", connection: 1)
    }
    #expect(throws: BrokerError.self) { try self.vhost.deleteQueue(name: "amq.delayed.later", connection: 1) }
    do {
      _ = try self.vhost.queue(named: "amq.delayed.later", connection: 1)
      Issue.record("the holding queue was handed to a client")
    } catch { #expect(error.replyCode == 403) }
    // Policies do not apply to it either.
    _ = self.vhost.setPolicies([
      Policy(name: "ttl", pattern: ".*", applyTo: .queues, priority: 0, definition: ["message-ttl": .int32(1)])
    ])
    self.time.advance(milliseconds: 10)
    #expect(self.vhost.queues["amq.delayed.later"]?.messageCount == 1)
  }

  @Test("deleting the exchange drops its held messages with its holding queue")
  func exchangeDeleted() throws {
    _ = self.publish(message("held", delay: .int32(1000)))
    try self.vhost.deleteExchange(name: "later")
    #expect(self.vhost.queues["amq.delayed.later"] == nil)
    self.time.advance(milliseconds: 2000)
    #expect(self.queue.messageCount == 0)
  }

  @Test("routes like topic when x-delayed-type says so, and checks bindings as topic does")
  func topic() throws {
    try self.vhost.declareExchange(
      name: "later-topic", type: "x-delayed-message", arguments: ["x-delayed-type": .longString("topic")])
    try self.vhost.bindQueue("q", to: "later-topic", routingKey: "a.*", connection: 1)
    let exchange = try #require(self.vhost.exchanges["later-topic"])
    _ = self.vhost.publish(
      Message.make(exchange: "later-topic", routingKey: "a.b", properties: .init(), body: ByteBuffer(string: "t")),
      to: exchange)
    #expect(bodies(self.queue) == ["t"])
  }
}

@Suite("Delayed-message exchange across restarts")
struct DelayedMessageRestartTests {
  let system = SimulatedFileSystem()

  func start(_ time: SkewedTime) throws -> (Broker, BrokerPersistence) {
    let persistence = try BrokerPersistence.open(
      directory: "/data", fileSystem: self.system, lock: false, logger: Logger(label: "test"))
    let broker = Broker(registry: registry(), clock: time.clock)
    persistence.recover(into: broker)
    try persistence.attach(to: broker)
    broker.timers = time  // as the runtime does once its loop runs
    return (broker, persistence)
  }

  @Test("persistent delayed messages of a durable exchange are stored before their confirm and survive a restart")
  func survivesRestart() throws {
    let before = SkewedTime()
    let (broker, persistence) = try self.start(before)
    let vhost = try #require(broker.vhosts["/"])
    let exchange = try vhost.declareExchange(
      name: "later", type: "x-delayed-message", durable: true, arguments: ["x-delayed-type": .longString("direct")])
    try vhost.declareQueue(name: "q", durable: true, connection: 1)
    try vhost.bindQueue("q", to: "later", routingKey: "k", connection: 1)
    let stored = vhost.publish(message("soon", delay: .int32(5_000), persistent: true), to: exchange)
    #expect(stored.accepted == 1 && stored.storageToken != nil)  // the confirm waits for the sync
    _ = vhost.publish(message("much later", delay: .int32(600_000), persistent: true), to: exchange)
    _ = vhost.publish(message("transient", delay: .int32(5_000)), to: exchange)
    let commit = persistence.store.commit()  // the sync the broker's sync thread runs
    let batch = try #require(commit.sync)
    try batch.run()
    _ = persistence.store.syncCompleted(batch, error: nil)

    let after = SkewedTime()
    after.skew = 10_000_000_000  // ten seconds pass while the broker is down
    let (restarted, _) = try self.start(after)
    let recovered = try #require(restarted.vhosts["/"])
    let holding = try #require(recovered.queues["amq.delayed.later"])
    #expect(holding.isHolding)
    after.advance(milliseconds: 0)  // the first turn of the loop: what came due while down is routed
    let queue = try #require(recovered.queues["q"])
    let due = try #require(queue.get(noAck: true))
    #expect(String(buffer: due.message.body) == "soon")
    #expect(due.message.properties.headers?["x-delay"] == .int32(-5_000))
    #expect(queue.messageCount == 0 && holding.messageCount == 1)
    after.advance(milliseconds: 600_000)
    #expect(bodies(queue) == ["much later"])
  }
}
