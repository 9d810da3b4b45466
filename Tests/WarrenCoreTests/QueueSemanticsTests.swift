import AMQPProtocol
import NIOCore
import Testing

@testable import WarrenCore

/// Time that moves only when a test says so.
final class ManualTime {
  var nanoseconds: UInt64 = 1_000_000_000
  var wallSeconds: UInt64 = 1_700_000_000

  func advance(milliseconds: UInt64) {
    self.nanoseconds += milliseconds * 1_000_000
  }
}

/// Queue timers run by hand: `fireDue()` fires what the manual time has reached, as the event loop would.
final class ManualTimers: QueueTimers {
  var pending: [(queue: Queue, deadline: UInt64)] = []
  let time: ManualTime
  let clock: BrokerClock

  init(time: ManualTime, clock: BrokerClock) {
    self.time = time
    self.clock = clock
  }

  func schedule(_ queue: Queue, at deadline: UInt64) { self.pending.append((queue, deadline)) }

  /// One turn of the loop: fires the timers due now; those they schedule wait for the next turn.
  func fireDue() {
    self.clock.refresh()
    let due = self.pending.filter { $0.deadline <= self.time.nanoseconds }
    self.pending.removeAll { $0.deadline <= self.time.nanoseconds }
    for (queue, deadline) in due { queue.timerFired(deadline: deadline) }
  }
}

/// A vhost on manual time, with a dead-letter exchange `dlx` (direct) and a queue `dead` bound to it with `#key`.
struct Fixture {
  let time = ManualTime()
  let clock: BrokerClock
  let timers: ManualTimers
  let vhost: VirtualHost
  let dead: Queue

  init(deadKey: String = "work") throws {
    let time = self.time
    self.clock = BrokerClock(
      source: { NIODeadline.uptimeNanoseconds(time.nanoseconds) }, wallSource: { time.wallSeconds })
    self.timers = ManualTimers(time: time, clock: self.clock)
    self.vhost = VirtualHost(name: "/", registry: ExchangeRegistry(), clock: self.clock)
    self.vhost.timers = self.timers
    try self.vhost.declareExchange(name: "dlx", type: "direct")
    self.dead = try self.vhost.declareQueue(name: "dead", connection: 1)
    try self.vhost.bindQueue("dead", to: "dlx", routingKey: deadKey, connection: 1)
  }

  func work(_ arguments: FieldTable) throws -> Queue {
    var arguments = arguments
    arguments["x-dead-letter-exchange"] = .longString("dlx")
    return try self.vhost.declareQueue(name: "work", arguments: arguments, connection: 1)
  }

  func publish(_ body: String, expiration: String? = nil, to queue: String = "work") -> PublishOutcome {
    var properties = BasicProperties()
    properties.expiration = expiration
    let message = Message.make(exchange: "", routingKey: queue, properties: properties, body: ByteBuffer(string: body))
    return self.vhost.publish(message, to: self.vhost.defaultExchange)
  }

  /// The bodies and x-death reasons in the dead-letter queue, taken.
  func deadLettered() -> [(body: String, reason: String)] {
    var result: [(String, String)] = []
    while let queued = self.dead.get(noAck: true) {
      let deaths = queued.message.properties.headers?["x-death"]
      guard case .array(let entries)? = deaths, case .table(let first)? = entries.first else {
        result.append((String(buffer: queued.message.body), "none"))
        continue
      }
      result.append((String(buffer: queued.message.body), first["reason"]?.stringValue ?? "?"))
    }
    return result
  }
}

@Suite("Queue TTL, limits and dead-lettering (manual time)")
struct QueueSemanticsTests {
  @Test("x-message-ttl: a message expires when its time passes, at the timer the queue asked for")
  func queueTTL() throws {
    let f = try Fixture()
    let work = try f.work(["x-message-ttl": .int32(100)])
    _ = f.publish("a")
    #expect(f.timers.pending.map(\.deadline) == [f.time.nanoseconds + 100_000_000])
    f.time.advance(milliseconds: 99)
    f.timers.fireDue()
    #expect(work.messageCount == 1)
    f.time.advance(milliseconds: 1)
    f.timers.fireDue()
    #expect(work.messageCount == 0)
    #expect(f.deadLettered().map(\.reason) == ["expired"])
    #expect(f.vhost.counters.values.messagesDeadLettered[1] == 1)
  }

  @Test("the lower of the queue TTL and the message expiration wins; only the head expires")
  func lowerTTLWinsAtTheHead() throws {
    let f = try Fixture()
    let work = try f.work(["x-message-ttl": .int32(1000)])
    _ = f.publish("long")
    _ = f.publish("short", expiration: "10")
    f.time.advance(milliseconds: 500)
    f.clock.refresh()
    work.expireHead()
    #expect(work.messageCount == 2)  // "short" is behind "long": it waits for the head, as in RabbitMQ
    f.time.advance(milliseconds: 500)
    f.timers.fireDue()
    #expect(work.messageCount == 0)
    #expect(f.deadLettered().map(\.body) == ["long", "short"])
  }

  @Test("expiration 0 reaches a waiting consumer and expires otherwise; basic.get never returns an expired one")
  func expirationZero() throws {
    let f = try Fixture()
    let work = try f.work([:])
    _ = f.publish("nobody", expiration: "0")
    #expect(work.messageCount == 0)
    #expect(f.deadLettered().map(\.body) == ["nobody"])
    let channel = RecordingChannel()
    let consumer = Consumer(tag: "c", queue: work, noAck: true, exclusive: false, prefetchCount: 0, channel: channel)
    try f.vhost.addConsumer(consumer)
    _ = f.publish("waiting", expiration: "0")
    #expect(channel.delivered.map(\.body) == ["waiting"])
    f.vhost.removeConsumer(consumer)
    _ = f.publish("got", expiration: "5")
    f.time.advance(milliseconds: 5)
    f.clock.refresh()
    #expect(work.get(noAck: true) == nil)
    #expect(f.deadLettered().map(\.body) == ["got"])
  }

  @Test("a million messages expiring at once go in bounded batches, each turn asking for the next")
  func boundedExpiry() throws {
    let f = try Fixture()
    let work = try f.work(["x-message-ttl": .int32(1)])
    for i in 0..<(Queue.expiryBatch * 2 + 5) { _ = f.publish("\(i)") }
    f.time.advance(milliseconds: 2)
    f.timers.fireDue()
    #expect(work.messageCount == Queue.expiryBatch + 5)
    #expect(f.timers.pending.map(\.deadline) == [f.time.nanoseconds])  // the rest on the next turn
    f.timers.fireDue()
    #expect(work.messageCount == 5)
    f.timers.fireDue()
    #expect(work.messageCount == 0)
    #expect(f.dead.messageCount == Queue.expiryBatch * 2 + 5)
  }

  @Test("x-max-length with drop-head dead-letters the oldest; the publish is accepted")
  func dropHead() throws {
    let f = try Fixture()
    let work = try f.work(["x-max-length": .int32(2)])
    for body in ["1", "2"] { #expect(f.publish(body).droppedOldest == 0) }
    #expect(f.publish("3").droppedOldest == 1)
    #expect(work.messageCount == 2)
    #expect(f.deadLettered().map(\.body) == ["1"])
    #expect(work.get(noAck: true).map { String(buffer: $0.message.body) } == "2")
  }

  @Test("reject-publish refuses what goes over the limit; reject-publish-dlx dead-letters it too")
  func rejectPublish() throws {
    for (overflow, deadLettered) in [("reject-publish", [String]()), ("reject-publish-dlx", ["big"])] {
      let f = try Fixture()
      let work = try f.work(["x-max-length-bytes": .int32(5), "x-overflow": .longString(overflow)])
      #expect(f.publish("abc").refused == 0)
      #expect(f.publish("big").refused == 1)  // 3 + 3 > 5
      #expect(f.publish("de").refused == 0)
      #expect(work.messageCount == 2)
      #expect(f.deadLettered().map(\.body) == deadLettered)
    }
  }

  @Test("a rejected delivery is dead-lettered with x-death; one entry per queue and reason, counted again")
  func rejectedCounted() throws {
    let f = try Fixture()
    let work = try f.work([:])
    try f.vhost.bindQueue("work", to: "dlx", routingKey: "work", connection: 1)
    _ = f.publish("m")
    for count in 1...3 {
      let delivered = try #require(work.get(noAck: false))
      work.reject(delivered)
      let back = try #require(f.dead.get(noAck: true))
      let headers = try #require(back.message.properties.headers)
      guard case .array(let deaths)? = headers["x-death"], case .table(let entry)? = deaths.first else {
        Issue.record("no x-death")
        return
      }
      #expect(deaths.count == 1)
      #expect(entry["count"] == .int64(Int64(count)))
      #expect(entry["queue"] == .longString("work"))
      #expect(entry["time"] == .timestamp(f.time.wallSeconds))
      #expect(entry.entries.map(\.key) == ["count", "exchange", "queue", "reason", "routing-keys", "time"])
      #expect(headers["x-first-death-reason"] == .longString("rejected"))
    }
  }

  @Test("an automatic dead-letter cycle is cut: a queue already in x-death without a rejection is left out")
  func cycleCut() throws {
    let f = try Fixture()
    let work = try f.work(["x-message-ttl": .int32(10)])
    try f.vhost.bindQueue("work", to: "dlx", routingKey: "work", connection: 1)
    _ = f.publish("m")
    f.time.advance(milliseconds: 10)
    f.timers.fireDue()
    #expect(work.messageCount == 0)  // not back in `work`
    #expect(f.deadLettered().map(\.reason) == ["expired"])
  }

  @Test("x-expires deletes a queue unused for the period; a consumer or a declare keeps it")
  func queueExpires() throws {
    let f = try Fixture()
    _ = try f.vhost.declareQueue(name: "temp", arguments: ["x-expires": .int32(100)], connection: 1)
    f.time.advance(milliseconds: 60)
    f.clock.refresh()
    _ = try f.vhost.declareQueue(name: "temp", passive: true, connection: 1)  // renews
    f.time.advance(milliseconds: 60)
    f.timers.fireDue()
    #expect(f.vhost.queues["temp"] != nil)
    f.time.advance(milliseconds: 40)
    f.timers.fireDue()
    #expect(f.vhost.queues["temp"] == nil)
  }

  @Test("x-max-priority: highest level first, FIFO within a level, above the maximum counts as the maximum")
  func priorities() throws {
    let f = try Fixture()
    let queue = try f.vhost.declareQueue(name: "p", arguments: ["x-max-priority": .int32(3)], connection: 1)
    for (body, priority) in [("a", 0), ("b", 3), ("c", 9), ("d", 1), ("e", 3)] {
      var properties = BasicProperties()
      properties.priority = UInt8(priority)
      let message = Message.make(exchange: "", routingKey: "p", properties: properties, body: ByteBuffer(string: body))
      #expect(message.priority == UInt8(priority))
      _ = f.vhost.publish(message, to: f.vhost.defaultExchange)
    }
    let first = try #require(queue.get(noAck: false))
    queue.requeue([first])
    var order: [String] = []
    while let queued = queue.get(noAck: true) { order.append(String(buffer: queued.message.body)) }
    #expect(order == ["b", "c", "e", "d", "a"])
  }

  @Test("x-single-active-consumer: the oldest consumer takes everything; the next takes over when it goes")
  func singleActiveConsumer() throws {
    let f = try Fixture()
    let queue = try f.vhost.declareQueue(
      name: "s", arguments: ["x-single-active-consumer": .bool(true)], connection: 1)
    let channel = RecordingChannel()
    let first = Consumer(tag: "first", queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel)
    let second = Consumer(
      tag: "second", queue: queue, noAck: true, exclusive: false, prefetchCount: 0, channel: channel)
    try f.vhost.addConsumer(first)
    try f.vhost.addConsumer(second)
    channel.accepting = false
    for body in ["a", "b"] { _ = f.publish(body, to: "s") }
    channel.accepting = true
    queue.dispatch()
    _ = f.publish("c", to: "s")
    f.vhost.removeConsumer(first)
    _ = f.publish("d", to: "s")
    #expect(channel.delivered.map { "\($0.consumer):\($0.body)" } == ["first:a", "first:b", "first:c", "second:d"])
    let exclusive = Consumer(tag: "x", queue: queue, noAck: true, exclusive: true, prefetchCount: 0, channel: channel)
    f.vhost.removeConsumer(second)
    #expect(throws: BrokerError.self) { try f.vhost.addConsumer(exclusive) }
  }

  @Test("policies: the highest priority match applies at once to existing queues; arguments beat it; removed, it goes")
  func policies() throws {
    let f = try Fixture()
    let work = try f.work(["x-max-length": .int32(5)])
    for i in 0..<4 { _ = f.publish("\(i)") }
    let changes = f.vhost.setPolicies([
      Policy(name: "low", pattern: "^wo", applyTo: .queues, priority: 1, definition: ["max-length": .int32(1)]),
      Policy(
        name: "high", pattern: "^work$", applyTo: .queues, priority: 9,
        definition: ["max-length": .int32(2), "message-ttl": .int32(50)]),
      Policy(
        name: "exchanges", pattern: ".*", applyTo: .exchanges, priority: 99, definition: ["message-ttl": .int32(1)]),
    ])
    #expect(changes == ["queue 'work' in vhost '/': policy high, operator policy none"])
    #expect(work.options.maxLength == 5)  // its own argument wins
    #expect(work.options.messageTTL == 50)
    f.time.advance(milliseconds: 50)
    f.timers.fireDue()
    #expect(work.messageCount == 0)  // the new TTL expired what was there
    f.vhost.setPolicies([])
    #expect(work.options.messageTTL == nil && work.policy == nil)
  }

  @Test("operator policies cap: the lower number wins over the queue's own value and the policy's")
  func operatorPolicies() throws {
    let f = try Fixture()
    let capped = try f.vhost.declareQueue(name: "capped", arguments: ["x-max-length": .int32(100)], connection: 1)
    let small = try f.vhost.declareQueue(name: "small", arguments: ["x-max-length": .int32(3)], connection: 1)
    f.vhost.setPolicies(
      [Policy(name: "p", pattern: ".*", applyTo: .all, priority: 0, definition: ["message-ttl": .int32(60_000)])],
      operatorPolicies: [
        Policy(
          name: "cap", pattern: ".*", applyTo: .queues, priority: 0,
          definition: ["max-length": .int32(10), "message-ttl": .int32(1_000)])
      ])
    #expect(capped.options.maxLength == 10 && small.options.maxLength == 3)
    #expect(capped.options.messageTTL == 1_000)
    for i in 0..<12 { _ = f.vhost.publish(message("\(i)", key: "capped"), to: f.vhost.defaultExchange) }
    #expect(capped.messageCount == 10)
  }

  @Test("a policy's alternate-exchange applies to exchanges declared before and after it")
  func policyAlternateExchange() throws {
    let f = try Fixture()
    let before = try f.vhost.declareExchange(name: "before", type: "direct")
    let lost = try f.vhost.declareQueue(name: "lost", connection: 1)
    try f.vhost.declareExchange(name: "ae", type: "fanout")
    try f.vhost.bindQueue("lost", to: "ae", routingKey: "", connection: 1)
    f.vhost.setPolicies([
      Policy(
        name: "ae", pattern: "^(before|after)$", applyTo: .exchanges, priority: 0,
        definition: ["alternate-exchange": .longString("ae")])
    ])
    let after = try f.vhost.declareExchange(name: "after", type: "direct")
    _ = f.vhost.publish(message("x", key: "nowhere"), to: before)
    _ = f.vhost.publish(message("y", key: "nowhere"), to: after)
    #expect(lost.messageCount == 2)
  }
}
