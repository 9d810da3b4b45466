import ArgumentParser
import WarrenPerf

/// `warren perf`: a load generator for any AMQP 0-9-1 broker.
struct Perf: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Load-test an AMQP 0-9-1 broker (Warren, RabbitMQ, ...): throughput, latency, and a loss check.",
    discussion: """
      Publishers and consumers each get their own connection. Every message carries its send time, a sequence \
      number and a check, so the run reports end-to-end latency percentiles and any lost, duplicated or corrupted \
      message. The last line printed is one line of JSON.
      """
  )

  @Option(help: "The broker (amqps:// for TLS).") var uri = "amqp://guest:guest@127.0.0.1:5672/"
  @Option(help: "For amqps://: CA certificates (PEM) to check the broker's certificate against.") var ca: String?
  @Option(help: "Publishing connections.") var publishers = 1
  @Option(help: "Consuming connections.") var consumers = 1
  @Option(help: "Message size in bytes (at least 16).") var size = 16
  @Option(help: "Publisher confirms with at most this many unconfirmed messages (0: no confirms).") var confirm = 0
  @Flag(help: "Consumers acknowledge (once per read, multiple); otherwise they consume with no-ack.") var ack = false
  @Flag(help: "Write each publish on its own and acknowledge each delivery on its own, as most client libraries do.")
  var unbatched = false
  @Option(help: "Consumer prefetch (basic.qos); 0 sets none.") var prefetch: UInt16 = 0
  @Flag(help: "Publish persistent messages (delivery mode 2) to durable queues.") var persistent = false
  @Option(help: "Queues bound to the exchange; each gets every message.") var queues = 1
  @Option(help: "Name the queues (NAME, or NAME-i) and keep them after the run (fill, restart, drain).")
  var queueName: String?
  @Option(help: "Only consume --count messages from this existing queue (acknowledged) and report the rate.")
  var drain: String?
  @Option(help: "The queues' x-queue-type (classic or quorum; none by default).") var queueType: String?
  @Option(help: "The queues' x-message-ttl in milliseconds (none by default).") var messageTtl: Int?
  @Flag(help: "Bind each queue with its own key; publisher i publishes to queue i % queues (no fan-out).")
  var spread = false
  @Option(help: "Add this many bindings that no message matches (nomatch.N.*).") var extraBindings = 0
  @Flag(help: "Connection churn: each of --publishers loops opens a connection, publishes once and closes it.")
  var churn = false
  @Option(help: "Exchange type: direct, fanout or topic.") var exchangeType = "direct"
  @Option(help: "Messages per second per publisher (0: unlimited).") var rate: Double = 0
  @Option(help: "Seconds to measure.") var duration: Double = 10
  @Option(help: "Seconds of warm-up before measuring.") var warmup: Double = 1
  @Option(help: "Messages per publisher, then stop (with --consumers 0: fill queues).") var count: UInt64 = 0
  @Option(help: "Open this many idle connections and hold them for the warm-up time.") var idleConnections = 0
  @Option(help: "The broker's process id, to report its resident memory and CPU time per message.")
  var brokerPid: Int32?
  @Option(help: "Event loop threads of this load generator.") var threads = 2

  func run() async throws {
    var configuration = PerfConfiguration()
    configuration.uri = self.uri
    configuration.caFile = self.ca
    configuration.publishers = self.publishers
    configuration.consumers = self.consumers
    configuration.size = self.size
    configuration.confirmWindow = self.confirm
    configuration.manualAck = self.ack
    configuration.unbatched = self.unbatched
    configuration.prefetch = self.prefetch
    configuration.persistent = self.persistent
    configuration.queues = self.queues
    configuration.spread = self.spread
    configuration.extraBindings = self.extraBindings
    configuration.churn = self.churn
    configuration.queueType = self.queueType
    configuration.messageTTL = self.messageTtl
    configuration.queueName = self.queueName
    configuration.drainQueue = self.drain
    configuration.exchangeType = self.exchangeType
    configuration.rate = self.rate
    configuration.duration = self.duration
    configuration.warmup = self.warmup
    configuration.count = self.count
    configuration.idleConnections = self.idleConnections
    configuration.brokerPID = self.brokerPid
    configuration.threads = self.threads
    let result = try await PerfRunner.run(configuration) { print($0) }
    print(
      "published \(result.published) (\(Int(result.publishRate)) msg/s), consumed \(result.consumed) "
        + "(\(Int(result.consumeRate)) msg/s), lost \(result.lost), duplicates \(result.duplicates), "
        + "corrupted \(result.corrupted)")
    if let p50 = result.latencyMicros["p50"], let p99 = result.latencyMicros["p99"] {
      print("latency p50 \(p50) us, p99 \(p99) us, max \(result.latencyMicros["max"] ?? 0) us")
    }
    print("RESULT " + result.jsonLine)
    if result.lost != 0 || result.duplicates != 0 || result.corrupted != 0 {
      throw ExitCode(2)
    }
  }
}
