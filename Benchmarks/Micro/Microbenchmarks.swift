import AMQPProtocol
import NIOCore
import TopicExchange
import WarrenCore
import WarrenMetrics
import WarrenSystem

/// Microbenchmarks of the hot pieces: frame decode and encode, routing per exchange type, queue enqueue and
/// dequeue. A few seconds in all; run with `make microbench` (release build). They report, they assert nothing.
@main
struct Microbenchmarks {
  /// Only the benchmarks whose names contain the first argument, if one is given.
  static let filter = CommandLine.arguments.dropFirst().first
  /// Timed runs of each (the second argument; 5 by default, 1 under valgrind's instruction count).
  static let repetitions = CommandLine.arguments.dropFirst(2).first.flatMap { Int($0) } ?? 5

  /// Whether the benchmarks named `name` run (set-up included).
  static func wanted(_ name: String) -> Bool {
    filter.map { name.contains($0) } ?? true
  }

  static func measure(_ name: String, operations: Int, _ body: () -> Void) {
    guard wanted(name) else { return }
    body()  // warm up
    let clock = ContinuousClock()
    var best = Duration.seconds(1000)
    for _ in 0..<repetitions {
      let elapsed = clock.measure(body)
      best = min(best, elapsed)
    }
    let nanos = Double(best.components.seconds) * 1e9 + Double(best.components.attoseconds) / 1e9
    let perOp = nanos / Double(operations)
    let padded = name + String(repeating: " ", count: max(1, 72 - name.count))
    let rounded = (perOp * 10).rounded() / 10
    print("\(padded)\(rounded) ns/op  \(Int(1e9 / perOp)) ops/s")
  }

  static func main() throws {
    let count = 200_000
    let rounds = 400
    for (name, persistent) in [("transient", false), ("persistent", true)] {
      var run = try EndToEnd(persistent: persistent, bodySize: 1024, batch: 256)
      measure("end to end, 1 KiB \(name), confirms + acks, batches of 256 (per message)", operations: rounds * 256) {
        for _ in 0..<rounds { try! run.round() }
        precondition(run.delivered > 0)
      }
      run.remove()
    }
    // As most clients do: one publish per read, one ack per delivery (the per-read costs are per message here).
    var unbatched = try EndToEnd(persistent: false, bodySize: 1024, batch: 1)
    measure("end to end, 1 KiB transient, confirms + acks, unbatched (a read each)", operations: rounds * 64) {
      for _ in 0..<(rounds * 64) { try! unbatched.round() }
      precondition(unbatched.delivered > 0)
    }
    unbatched.remove()
    // Frames: publish + header + 16-byte body, as a client sends them.
    var wire = ByteBuffer()
    for _ in 0..<count {
      wire.writeAMQPMethodFrame(channel: 1, .basicPublish(BasicPublish(exchange: "amq.direct", routingKey: "key")))
      wire.writeAMQPFrame(
        .header(channel: 1, ContentHeader(bodySize: 16, properties: BasicProperties(deliveryMode: 1))))
      wire.writeAMQPFrame(.body(channel: 1, ByteBuffer(repeating: 1, count: 16)))
    }
    measure("decode publish+header+body (16 B)", operations: count) {
      var buffer = wire
      var decoder = AMQPFrameDecoder()
      var frames = 0
      while (try? decoder.decodeFrame(&buffer)) != nil { frames += 1 }
      precondition(frames == 3 * count)
    }

    let message = Message.make(exchange: "amq.direct", routingKey: "key", body: ByteBuffer(repeating: 1, count: 16))
    var out = ByteBuffer()
    out.reserveCapacity(count * 80)
    let tag: [UInt8] = Array("ctag".utf8)
    measure("encode delivery in one pass (16 B)", operations: count) {
      out.clear()
      tag.withUnsafeBytes { tag in
        for deliveryTag in 0..<count {
          message.withBytes { exchange, routingKey, properties, body in
            out.writeAMQPDelivery(
              channel: 1, consumerTag: tag, deliveryTag: UInt64(deliveryTag), redelivered: false, exchange: exchange,
              routingKey: routingKey, properties: properties, body: body, maxFrameSize: 131_072)
          }
        }
      }
    }

    measure("Message.make (16 B body)", operations: count) {
      let properties = ByteBuffer(bytes: [0x10, 0, 1])
      let body = ByteBuffer(repeating: 1, count: 16)
      for _ in 0..<count {
        _ = Message.make(exchange: "amq.direct", routingKey: "key", rawProperties: properties, body: body)
      }
    }

    for bindings in [10, 1_000, 100_000] where wanted("route direct") {
      let vhost = VirtualHost(name: "/", registry: ExchangeRegistry())
      let exchange = try vhost.declareExchange(name: "d", type: "direct")
      let target = try vhost.declareQueue(name: "target", connection: 1)
      for i in 0..<bindings {
        let queue = "q\(i % 100)"
        if vhost.queues[queue] == nil { try vhost.declareQueue(name: queue, connection: 1) }
        try vhost.bindQueue(queue, to: "d", routingKey: "key-\(i)", connection: 1)
      }
      try vhost.bindQueue("target", to: "d", routingKey: "hit", connection: 1)
      measure("route direct, \(bindings) bindings, enqueue", operations: count) {
        for _ in 0..<count { vhost.publish(message, routingKey: "hit", to: exchange) }
        _ = target.purge()
      }
    }

    var topicRegistry = ExchangeRegistry()
    topicRegistry.register(TopicExchangeType())
    for bindings in [10, 1_000, 100_000] where wanted("route topic") {
      let vhost = VirtualHost(name: "/", registry: topicRegistry)
      let exchange = try vhost.declareExchange(name: "t", type: "topic")
      let target = try vhost.declareQueue(name: "target", connection: 1)
      for i in 0..<bindings {
        let queue = "q\(i % 100)"
        if vhost.queues[queue] == nil { try vhost.declareQueue(name: queue, connection: 1) }
        // Keys that share the first word but do not match: routing cost must not grow with them.
        try vhost.bindQueue(queue, to: "t", routingKey: "stock.\(i).*", connection: 1)
      }
      try vhost.bindQueue("target", to: "t", routingKey: "stock.usd.#", connection: 1)
      measure("route topic, \(bindings) bindings, enqueue", operations: count) {
        for _ in 0..<count { vhost.publish(message, routingKey: "stock.usd.nyse", to: exchange) }
        _ = target.purge()
      }
    }

    let fanoutHost = VirtualHost(name: "/", registry: ExchangeRegistry())
    let fanout = try fanoutHost.declareExchange(name: "f", type: "fanout")
    var fanoutQueues: [Queue] = []
    for i in 0..<10 {
      fanoutQueues.append(try fanoutHost.declareQueue(name: "f\(i)", connection: 1))
      try fanoutHost.bindQueue("f\(i)", to: "f", routingKey: "", connection: 1)
    }
    measure("route fanout to 10 queues, enqueue (per message)", operations: count / 10) {
      for _ in 0..<(count / 10) { fanoutHost.publish(message, routingKey: "", to: fanout) }
      for queue in fanoutQueues { _ = queue.purge() }
    }

    let storage = InMemoryQueueStorage()
    measure("queue storage append + removeFirst", operations: count) {
      for i in 0..<count { storage.append(QueuedMessage(message: message, sequence: UInt32(truncatingIfNeeded: i))) }
      while storage.removeFirst() != nil {}
    }

    // A per-object scrape of 10,000 queues (rendering only; the snapshot is copied on the broker's loop).
    var snapshot = MetricsSnapshot()
    snapshot.queues = (0..<10_000).map { QueueSample(vhost: "/", name: "queue-\($0)") }
    snapshot.queueCount = snapshot.queues.count
    let renderer = MetricsRenderer(nodeName: "warren@bench", clusterName: "bench", version: "0", startTime: 0)
    let process = ProcessStatistics(residentMemory: 0, openFileDescriptors: 0, maxFileDescriptors: 0, diskFree: 0)
    measure("render /metrics/per-object, 10,000 queues (per scrape)", operations: 1) {
      _ = renderer.perObject(snapshot, process: process, now: 1)
    }
  }
}
