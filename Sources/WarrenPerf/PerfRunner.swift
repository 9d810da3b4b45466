import AMQPProtocol
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import WarrenSystem

#if canImport(Glibc)
  import Glibc
#endif

/// What to run: the knobs of RabbitMQ's PerfTest and lavinmqperf that the comparisons need.
public struct PerfConfiguration: Sendable {
  /// The broker, `amqp://user:pass@host:port/vhost`.
  public var uri = "amqp://guest:guest@127.0.0.1:5672/"
  /// For `amqps://`: CA certificates (PEM) the broker's certificate is checked against (the system's when nil).
  public var caFile: String?
  /// Publishing connections.
  public var publishers = 1
  /// Consuming connections.
  public var consumers = 1
  /// Message body size in bytes (at least 16: send time, sequence, publisher, check).
  public var size = 16
  /// Publisher confirms with this many unconfirmed messages at most; 0 publishes without confirms.
  public var confirmWindow = 0
  /// Consumers acknowledge (once per socket read, with `multiple`); otherwise no-ack.
  public var manualAck = false
  /// As most client libraries do: each publish written on its own (one write each), each delivery acknowledged
  /// on its own; otherwise publishes go in batches per write and acks once per read.
  public var unbatched = false
  /// basic.qos prefetch count for consumers; 0 sets none.
  public var prefetch: UInt16 = 0
  /// Delivery mode 2.
  public var persistent = false
  /// Names the queues (`NAME`, or `NAME-i` for several) and keeps them after the run (to fill a queue, restart the
  /// broker and drain it); nil makes fresh queues and deletes them at the end.
  public var queueName: String?
  /// Only consume `count` messages from this existing queue, with acknowledgements, and report the rate.
  public var drainQueue: String?
  /// The `x-queue-type` of the queues (`classic`, `quorum`); nil declares none.
  public var queueType: String?
  /// The queues' `x-message-ttl` in milliseconds; nil declares none.
  public var messageTTL: Int?
  /// Queues bound to the exchange; every message reaches each of them (unless `spread`).
  public var queues = 1
  /// Each queue bound with a key of its own, publisher `i` publishing to queue `i % queues` (many independent
  /// publisher-queue-consumer pipelines instead of fan-out).
  public var spread = false
  /// This many more bindings on the exchange that no message matches (`nomatch.N.*`): routing with many bindings.
  public var extraBindings = 0
  /// Connection churn: `publishers` loops each open a connection, publish one message, close it, again, for the
  /// duration; reports connections per second.
  public var churn = false
  /// The exchange type: `direct` or `fanout`.
  public var exchangeType = "direct"
  /// Messages per second per publisher; 0 is as fast as possible.
  public var rate: Double = 0
  /// Seconds measured (after the warm-up).
  public var duration: Double = 10
  /// Seconds before measuring starts.
  public var warmup: Double = 1
  /// Messages per publisher, then stop (0: publish until the duration ends).
  public var count: UInt64 = 0
  /// Open this many idle connections instead of publishing and consuming.
  public var idleConnections = 0
  /// The broker's process id, to report its resident memory before and after.
  public var brokerPID: Int32?
  /// Event loop threads of the load generator.
  public var threads = 2

  public init() {}
}

/// What a run measured.
public struct PerfResult: Sendable {
  public var published: UInt64 = 0
  public var consumed: UInt64 = 0
  public var publishRate: Double = 0
  public var consumeRate: Double = 0
  public var latencyMicros: [String: UInt64] = [:]
  public var lost: Int64 = 0
  public var duplicates: UInt64 = 0
  public var corrupted: UInt64 = 0
  public var nacked: UInt64 = 0
  public var returned: UInt64 = 0
  public var rssBeforeKB: Int?
  public var rssAfterKB: Int?
  public var connections = 0
  /// Connections opened, used and closed per second (connection churn).
  public var connectionRate: Double?
  /// The broker's CPU time per message while measuring (delivered messages, or published ones when nobody
  /// consumes), in microseconds; needs the broker's pid.
  public var brokerCPUMicrosPerMessage: Double?
  /// This load generator's own CPU time per message, likewise: what the broker makes its clients spend.
  public var clientCPUMicrosPerMessage: Double?

  /// One line of JSON, for scripts.
  public var jsonLine: String {
    var fields: [String] = [
      "\"published\":\(published)", "\"consumed\":\(consumed)",
      "\"publish_rate\":\(Int(publishRate))", "\"consume_rate\":\(Int(consumeRate))",
      "\"lost\":\(lost)", "\"duplicates\":\(duplicates)", "\"corrupted\":\(corrupted)",
      "\"nacked\":\(nacked)", "\"returned\":\(returned)", "\"connections\":\(connections)",
    ]
    for key in ["p50", "p75", "p95", "p99", "p999", "max"] {
      if let v = latencyMicros[key] { fields.append("\"\(key)_us\":\(v)") }
    }
    if let rssBeforeKB { fields.append("\"rss_before_kb\":\(rssBeforeKB)") }
    if let rssAfterKB { fields.append("\"rss_after_kb\":\(rssAfterKB)") }
    if let connectionRate { fields.append("\"connection_rate\":\(Int(connectionRate))") }
    for (key, value) in [
      ("broker_cpu_us_per_msg", self.brokerCPUMicrosPerMessage),
      ("client_cpu_us_per_msg", self.clientCPUMicrosPerMessage),
    ] {
      if let value { fields.append("\"\(key)\":\((value * 100).rounded() / 100)") }
    }
    return "{" + fields.joined(separator: ",") + "}"
  }
}

/// CPU time of the broker and of this process, read before and after a measured window.
struct CPUSample {
  var broker: Double?
  var client: Double

  init(brokerPID: Int32?) {
    self.broker = brokerPID.flatMap { ProcessStatistics.cpuSeconds(pid: $0) }
    self.client = ProcessStatistics.ownCPUSeconds()
  }

  /// Microseconds per message of each, from `self` to `end`, over `messages`.
  func perMessage(until end: CPUSample, messages: UInt64, into result: inout PerfResult) {
    guard messages > 0 else { return }
    if let before = self.broker, let after = end.broker {
      result.brokerCPUMicrosPerMessage = (after - before) * 1e6 / Double(messages)
    }
    result.clientCPUMicrosPerMessage = (end.client - self.client) * 1e6 / Double(messages)
  }
}

/// Runs a load against any AMQP 0-9-1 broker and checks that nothing was lost, duplicated or corrupted.
public enum PerfRunner {
  public static func run(_ configuration: PerfConfiguration, log: @Sendable (String) -> Void) async throws
    -> PerfResult
  {
    guard let endpoint = AMQPURL(configuration.uri) else { throw PerfError.badURI(configuration.uri) }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
    do {
      let result = try await self.run(configuration, endpoint: endpoint, group: group, log: log)
      try await group.shutdownGracefully()
      return result
    } catch {
      try? await group.shutdownGracefully()
      throw error
    }
  }

  static func run(
    _ configuration: PerfConfiguration, endpoint: AMQPURL, group: any EventLoopGroup,
    log: @Sendable (String) -> Void
  ) async throws -> PerfResult {
    var result = PerfResult()
    result.rssBeforeKB = configuration.brokerPID.flatMap { residentKB(pid: $0) }

    if let queue = configuration.drainQueue {
      // Consume `count` messages from a queue that exists (filled before, e.g. across a restart), acknowledged.
      let loop = group.next()
      let consuming = loop.makePromise(of: Void.self)
      let role = ConsumerRole(queue: queue, manualAck: true, prefetch: 1000, consuming: consuming)
      let channel = try await connect(
        endpoint: endpoint, role: role, group: group, on: loop, caFile: configuration.caFile)
      try await consuming.futureResult.get()
      let start = NIODeadline.now()
      while try await loop.submit({ role.received }).get() < configuration.count {
        try await Task.sleep(for: .milliseconds(5))
      }
      let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
      result.consumed = try await loop.submit { role.received }.get()
      result.consumeRate = Double(result.consumed) / seconds
      result.connections = 1
      try? await channel.close()
      return result
    }

    if configuration.churn {
      return try await self.churn(configuration, endpoint: endpoint, group: group)
    }

    if configuration.idleConnections > 0 {
      let channels = try await openIdle(
        count: configuration.idleConnections, endpoint: endpoint, group: group, caFile: configuration.caFile)
      result.connections = channels.count
      log("\(channels.count) connections open")
      try await Task.sleep(for: .seconds(configuration.warmup))
      result.rssAfterKB = configuration.brokerPID.flatMap { residentKB(pid: $0) }
      for channel in channels { try? await channel.close() }
      return result
    }

    let runID = String(UInt32.random(in: 0...UInt32.max), radix: 36)
    let exchange = "perf-\(runID)"
    let queues = (0..<max(1, configuration.queues)).map { index in
      configuration.queueName.map { configuration.queues > 1 ? "\($0)-\(index)" : $0 } ?? "perf-\(runID)-\(index)"
    }
    var setupMethods: [AMQPMethod] = [
      .exchangeDeclare(ExchangeDeclare(exchange: exchange, type: configuration.exchangeType, autoDelete: false))
    ]
    for (index, queue) in queues.enumerated() {
      var arguments: FieldTable = configuration.queueType.map { ["x-queue-type": .longString($0)] } ?? [:]
      if let ttl = configuration.messageTTL { arguments["x-message-ttl"] = .int64(Int64(ttl)) }
      setupMethods.append(
        .queueDeclare(
          QueueDeclare(
            queue: queue, durable: configuration.persistent || configuration.queueType == "quorum",
            arguments: arguments)))
      let key = configuration.spread ? "perf-\(index)" : "perf"
      setupMethods.append(.queueBind(QueueBind(queue: queue, exchange: exchange, routingKey: key)))
    }
    for index in 0..<configuration.extraBindings {
      setupMethods.append(.queueBind(QueueBind(queue: queues[0], exchange: exchange, routingKey: "nomatch.\(index).*")))
    }
    let setupDone = group.next().makePromise(of: Void.self)
    let setup = try await connect(
      endpoint: endpoint, role: SetupRole(methods: setupMethods, done: setupDone), group: group,
      caFile: configuration.caFile)
    try await setupDone.futureResult.get()

    // Consumers first, so that nothing is published before someone listens.
    var consumers: [(any Channel, ConsumerRole)] = []
    for i in 0..<configuration.consumers {
      let loop = group.next()
      let consuming = loop.makePromise(of: Void.self)
      let role = ConsumerRole(
        queue: queues[i % queues.count], manualAck: configuration.manualAck, prefetch: configuration.prefetch,
        consuming: consuming, ackEach: configuration.unbatched)
      let channel = try await connect(
        endpoint: endpoint, role: role, group: group, on: loop, caFile: configuration.caFile)
      try await consuming.futureResult.get()
      consumers.append((channel, role))
    }
    var publishers: [(any Channel, PublisherRole)] = []
    for i in 0..<configuration.publishers {
      let loop = group.next()
      let role = PublisherRole(
        id: UInt16(truncatingIfNeeded: i), exchange: exchange,
        routingKey: configuration.spread ? "perf-\(i % queues.count)" : "perf", size: configuration.size,
        persistent: configuration.persistent, mandatory: false, confirmWindow: configuration.confirmWindow,
        rate: configuration.rate, limit: configuration.count, unbatched: configuration.unbatched)
      let channel = try await connect(
        endpoint: endpoint, role: role, group: group, on: loop, caFile: configuration.caFile)
      publishers.append((channel, role))
    }

    func totals() async throws -> (published: UInt64, consumed: UInt64) {
      var published: UInt64 = 0
      var consumed: UInt64 = 0
      for (channel, role) in publishers { published += try await channel.eventLoop.submit { role.published }.get() }
      for (channel, role) in consumers { consumed += try await channel.eventLoop.submit { role.received }.get() }
      return (published, consumed)
    }

    let measureCount = configuration.count > 0 && configuration.consumers == 0
    if measureCount {
      // Publish a fixed number of messages with nobody consuming (e.g. to measure queued memory).
      let cpu = CPUSample(brokerPID: configuration.brokerPID)
      let start = NIODeadline.now()
      while true {
        var finished = true
        for (channel, role) in publishers {
          let done = try await channel.eventLoop.submit { role.isFinished }.get()
          finished = finished && done
        }
        if finished { break }
        try await Task.sleep(for: .milliseconds(50))
      }
      let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
      let (published, _) = try await totals()
      result.published = published
      result.publishRate = Double(published) / seconds
      cpu.perMessage(until: CPUSample(brokerPID: configuration.brokerPID), messages: published, into: &result)
      result.rssAfterKB = configuration.brokerPID.flatMap { residentKB(pid: $0) }
    } else {
      try await Task.sleep(for: .seconds(configuration.warmup))
      for (channel, role) in consumers {
        try await channel.eventLoop.submit {
          role.resetHistogram()
          role.measuring = true
        }.get()
      }
      let start = try await totals()
      let cpu = CPUSample(brokerPID: configuration.brokerPID)
      let startTime = NIODeadline.now()
      try await Task.sleep(for: .seconds(configuration.duration))
      let end = try await totals()
      let seconds = Double((NIODeadline.now() - startTime).nanoseconds) / 1e9
      cpu.perMessage(
        until: CPUSample(brokerPID: configuration.brokerPID),
        messages: configuration.consumers > 0 ? end.consumed - start.consumed : end.published - start.published,
        into: &result)
      result.publishRate = Double(end.published - start.published) / seconds
      result.consumeRate = Double(end.consumed - start.consumed) / seconds
      for (channel, role) in consumers {
        try await channel.eventLoop.submit { role.measuring = false }.get()
      }
      for (channel, role) in publishers {
        try await channel.eventLoop.submit { role.running = false }.get()
      }
      result.rssAfterKB = configuration.brokerPID.flatMap { residentKB(pid: $0) }
    }

    // Drain: wait until every published message reached every queue's consumers, or progress stops.
    var published: UInt64 = 0
    for (channel, role) in publishers {
      let counts = try await channel.eventLoop.submit {
        (role.published, role.nacked, role.returned)
      }.get()
      published += counts.0
      result.nacked += counts.1
      result.returned += counts.2
    }
    result.published = published
    if !consumers.isEmpty {
      let expected = configuration.spread ? published : published * UInt64(queues.count)
      var last: UInt64 = 0
      var idleSince = NIODeadline.now()
      while true {
        let (_, consumed) = try await totals()
        if consumed >= expected { break }
        if consumed != last {
          last = consumed
          idleSince = .now()
        } else if NIODeadline.now() - idleSince > .seconds(10) {
          break
        }
        try await Task.sleep(for: .milliseconds(20))
      }
      // Merge what each queue's consumers saw.
      var unique: UInt64 = 0
      var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
      for (queueIndex, _) in queues.enumerated() {
        var seen: [UInt16: SequenceSet] = [:]
        for (index, (channel, role)) in consumers.enumerated() where index % queues.count == queueIndex {
          let snapshot = try await channel.eventLoop.submit {
            (role.seen, role.duplicates, role.corrupted, role.received, role.histogram)
          }.get()
          result.duplicates += snapshot.1
          result.corrupted += snapshot.2
          result.consumed += snapshot.3
          merged.add(snapshot.4)
          for (publisher, set) in snapshot.0 {
            result.duplicates += UInt64(seen[publisher, default: SequenceSet()].formUnion(set))
          }
        }
        for set in seen.values { unique += UInt64(set.count) }
      }
      result.lost = Int64(expected) - Int64(unique)
      if merged.totalCount > 0 {
        result.latencyMicros = [
          "p50": merged.valueAtPercentile(50), "p75": merged.valueAtPercentile(75),
          "p95": merged.valueAtPercentile(95), "p99": merged.valueAtPercentile(99),
          "p999": merged.valueAtPercentile(99.9), "max": merged.max,
        ]
      }
    }

    // Clean up.
    for (channel, _) in publishers { try? await channel.close() }
    for (channel, _) in consumers { try? await channel.close() }
    let cleanupDone = group.next().makePromise(of: Void.self)
    let cleanupMethods: [AMQPMethod] =
      (configuration.queueName == nil ? queues.map { .queueDelete(QueueDelete(queue: $0)) } : [])
      + [.exchangeDelete(ExchangeDelete(exchange: exchange))]
    let cleanup = try await connect(
      endpoint: endpoint, role: SetupRole(methods: cleanupMethods, done: cleanupDone), group: group,
      caFile: configuration.caFile)
    try await cleanupDone.futureResult.get()
    try? await cleanup.close()
    try? await setup.close()
    result.connections = configuration.publishers + configuration.consumers
    return result
  }

  /// Connection churn: loops that open a connection, publish one message, close it.
  static func churn(_ configuration: PerfConfiguration, endpoint: AMQPURL, group: any EventLoopGroup) async throws
    -> PerfResult
  {
    var result = PerfResult()
    let cpu = CPUSample(brokerPID: configuration.brokerPID)
    let start = NIODeadline.now()
    let end = start + .nanoseconds(Int64(configuration.duration * 1e9))
    // Each loop runs on an event loop of its own choosing, without a task hop per connection: the load generator's
    // own cost per connection (async hops, a name resolution per connect) was the limit here, not the broker's.
    let address = try SocketAddress(ipAddress: endpoint.host, port: endpoint.port)
    let loops = (0..<max(1, configuration.publishers)).map { _ in
      let eventLoop = group.next()
      return eventLoop.flatSubmit {
        ChurnLoop(endpoint: endpoint, address: address, eventLoop: eventLoop, until: end).run()
      }
    }
    var opened = 0
    for loop in loops { opened += try await loop.get() }
    let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
    result.connections = opened
    result.published = UInt64(opened)
    result.connectionRate = Double(opened) / seconds
    cpu.perMessage(until: CPUSample(brokerPID: configuration.brokerPID), messages: UInt64(opened), into: &result)
    return result
  }

  static func connect(
    endpoint: AMQPURL, role: any PerfRole & Sendable, group: any EventLoopGroup, on loop: (any EventLoop)? = nil,
    caFile: String? = nil
  ) async throws -> any Channel {
    let eventLoop = loop ?? group.next()
    let ready = eventLoop.makePromise(of: Void.self)
    let tls = endpoint.tls ? try PerfTLS.context(caFile: caFile) : nil
    let serverName = (try? SocketAddress(ipAddress: endpoint.host, port: 0)) == nil ? endpoint.host : nil
    let channel = try await ClientBootstrap(group: eventLoop)
      .channelOption(.tcpOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          if let tls {
            try channel.pipeline.syncOperations.addHandler(
              NIOSSLClientHandler(context: tls, serverHostname: serverName))
          }
          try channel.pipeline.syncOperations.addHandler(
            PerfConnection(endpoint: endpoint, role: role, ready: ready))
        }
      }
      .connectTimeout(.seconds(30))
      .connect(host: endpoint.host, port: endpoint.port).get()
    // A broker that accepts but never answers (out of file descriptors, say) must not hang the run.
    let timeout = eventLoop.scheduleTask(in: .seconds(30)) {
      ready.fail(PerfError.unexpected("no handshake within 30 s"))
    }
    defer { timeout.cancel() }
    do {
      try await ready.futureResult.get()
    } catch {
      try? await channel.close()
      throw error
    }
    return channel
  }

  static func openIdle(count: Int, endpoint: AMQPURL, group: any EventLoopGroup, caFile: String?) async throws
    -> [any Channel]
  {
    var channels: [any Channel] = []
    var index = 0
    while index < count {
      let batch = min(50, count - index)
      try await withThrowingTaskGroup(of: (any Channel).self) { tasks in
        for _ in 0..<batch {
          tasks.addTask { try await connect(endpoint: endpoint, role: IdleRole(), group: group, caFile: caFile) }
        }
        for try await channel in tasks { channels.append(channel) }
      }
      index += batch
    }
    return channels
  }

  /// A process's resident memory in KiB, from `/proc/PID/status`.
  public static func residentKB(pid: Int32) -> Int? {
    guard let file = fopen("/proc/\(pid)/status", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), file) != nil {
      let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      if text.hasPrefix("VmRSS:") {
        return Int(text.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
      }
    }
    return nil
  }
}

/// One loop of connection churn on one event loop: connect, handshake, publish once, close, again, until a deadline.
/// Confined to its event loop.
final class ChurnLoop: @unchecked Sendable {
  let endpoint: AMQPURL
  let address: SocketAddress
  let eventLoop: any EventLoop
  let deadline: NIODeadline
  private var count = 0
  private let done: EventLoopPromise<Int>

  init(endpoint: AMQPURL, address: SocketAddress, eventLoop: any EventLoop, until deadline: NIODeadline) {
    self.endpoint = endpoint
    self.address = address
    self.eventLoop = eventLoop
    self.deadline = deadline
    self.done = eventLoop.makePromise()
  }

  /// Starts the loop; the future has the number of connections opened, used and closed.
  func run() -> EventLoopFuture<Int> {
    self.next()
    return self.done.futureResult
  }

  private func next() {
    guard NIODeadline.now() < self.deadline else {
      self.done.succeed(self.count)
      return
    }
    let closed = self.eventLoop.makePromise(of: Void.self)
    let ready = self.eventLoop.makePromise(of: Void.self)
    let endpoint = self.endpoint
    // A broker that accepts but never answers must not hang the run.
    let timeout = self.eventLoop.scheduleTask(in: .seconds(30)) {
      ready.fail(PerfError.unexpected("no handshake within 30 s"))
      closed.fail(PerfError.unexpected("no close-ok within 30 s"))
    }
    let bound = NIOLoopBound(self, eventLoop: self.eventLoop)
    ClientBootstrap(group: self.eventLoop)
      .channelOption(.tcpOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            PerfConnection(endpoint: endpoint, role: ChurnRole(closed: closed), ready: ready))
        }
      }
      .connect(to: self.address)
      .flatMap { channel in
        ready.futureResult.flatMap { closed.futureResult }
          .flatMap { channel.close() }
          .flatMapError { error in channel.close().flatMapThrowing { throw error } }
      }
      .whenComplete { result in
        timeout.cancel()
        let loop = bound.value
        switch result {
        case .success:
          loop.count += 1
          loop.next()
        case .failure(let error):
          ready.fail(error)
          closed.fail(error)
          loop.done.fail(error)
        }
      }
  }
}

/// The TLS client context of an `amqps://` run: made once, shared by its connections.
enum PerfTLS {
  private static let made = NIOLockedValueBox<[String: NIOSSLContext]>([:])

  static func context(caFile: String?) throws -> NIOSSLContext {
    try self.made.withLockedValue { made in
      if let context = made[caFile ?? ""] { return context }
      var configuration = TLSConfiguration.makeClientConfiguration()
      if let caFile { configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile)) }
      configuration.certificateVerification = .noHostnameVerification
      let context = try NIOSSLContext(configuration: configuration)
      made[caFile ?? ""] = context
      return context
    }
  }
}
