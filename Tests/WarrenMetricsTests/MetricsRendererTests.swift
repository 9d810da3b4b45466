import Testing
import WarrenCore
import WarrenSystem

@testable import WarrenMetrics

@Suite("Prometheus text")
struct PrometheusTextTests {
  @Test("label values and help text are escaped")
  func escaping() {
    var writer = PrometheusTextWriter()
    writer.family("m", .gauge, help: "a \\ b\nc")
    writer.sample("m", [("queue", "q\"1\\\n")], 3)
    #expect(writer.text == "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{queue=\"q\\\"1\\\\\\n\"} 3\n")
  }

  @Test("a histogram's buckets are cumulative and end with +Inf, _sum and _count")
  func histogram() {
    var writer = PrometheusTextWriter()
    writer.histogram("h", help: "sizes", [("protocol", "amqp091")], bounds: [64, 256], counts: [2, 0, 5], sum: 999)
    let lines = writer.text.split(separator: "\n").map(String.init)
    #expect(
      lines == [
        "# HELP h sizes", "# TYPE h histogram", #"h_bucket{protocol="amqp091",le="64"} 2"#,
        #"h_bucket{protocol="amqp091",le="256"} 2"#, #"h_bucket{protocol="amqp091",le="+Inf"} 7"#,
        #"h_sum{protocol="amqp091"} 999"#, #"h_count{protocol="amqp091"} 7"#,
      ])
  }

  @Test("message sizes fall in the first bucket whose bound is at least the size")
  func sizeBuckets() {
    let bounds = BrokerCounters.messageSizeBuckets
    #expect(bounds.count == 13 && bounds.first == 64 && bounds[1] == 256 && bounds.last == 512 * 1024 * 1024)
    for size in [0, 1, 63, 64, 65, 255, 256, 257, 1000, 1024, 1025, 4096, 100_000, 268_435_456, 268_435_457] {
      let index = BrokerCounters.messageSizeBucketIndex(size)
      #expect(size <= bounds[index], "size \(size) index \(index)")
      if index > 0 { #expect(size > bounds[index - 1], "size \(size) index \(index)") }
    }
    #expect(BrokerCounters.messageSizeBucketIndex(512 * 1024 * 1024 + 1) == 13)  // +Inf
    let counters = BrokerCounters()
    counters.recordMessageSize(16)
    counters.recordMessageSize(1024)
    #expect(counters.values.messageSizeCounts[0] == 1 && counters.values.messageSizeCounts[2] == 1)
    #expect(counters.values.messageSizeSum == 1040)
  }
}

@Suite("Metrics renderer")
struct MetricsRendererTests {
  let renderer = MetricsRenderer(
    prefix: "rabbitmq", nodeName: "warren@test", clusterName: "warren@test", version: "1.2.3", startTime: 1000)
  let process = ProcessStatistics(residentMemory: 1, openFileDescriptors: 2, maxFileDescriptors: 3, diskFree: 4)

  func snapshot() -> MetricsSnapshot {
    var snapshot = MetricsSnapshot()
    snapshot.counters.messagesReceived = 7
    snapshot.counters.messagesDeliveredConsumeAutoAck = 2
    snapshot.counters.messagesDeliveredGetManualAck = 3
    var a = QueueSample(vhost: "/", name: "a")
    a.ready = 4
    a.unacked = 1
    var b = QueueSample(vhost: "other", name: "b")
    b.ready = 10
    snapshot.queues = [a, b]
    snapshot.queueTotals.add(a)
    snapshot.queueTotals.add(b)
    snapshot.queueCount = 2
    snapshot.exchanges = [ExchangeSample(vhost: "/", name: "amq.direct", type: "direct", published: 7)]
    snapshot.connections = [
      ConnectionSample(
        vhost: "/", name: "127.0.0.1:1 -> 127.0.0.1:5672", user: "guest", channels: 1, bytesReceived: 5, bytesSent: 6)
    ]
    return snapshot
  }

  func samples(_ text: String) -> [String: String] {
    var result: [String: String] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
      let space = line.lastIndex(of: " ")!
      result[String(line[..<space])] = String(line[line.index(after: space)...])
    }
    return result
  }

  @Test("/metrics has totals and no per-object labels")
  func aggregated() {
    let text = self.renderer.aggregated(self.snapshot(), process: self.process, now: 1010)
    let samples = self.samples(text)
    #expect(samples["rabbitmq_queue_messages_ready"] == "14")
    #expect(samples["rabbitmq_queue_messages"] == "15")
    #expect(samples["rabbitmq_queues"] == "2")
    #expect(samples[#"rabbitmq_global_messages_received_total{protocol="amqp091"}"#] == "7")
    #expect(samples[#"rabbitmq_global_messages_delivered_total{protocol="amqp091"}"#] == "5")
    #expect(samples["rabbitmq_process_resident_memory_bytes"] == "1")
    #expect(samples["rabbitmq_process_max_tcp_sockets"] == "3")
    #expect(samples["rabbitmq_uptime_seconds"] == "10.0")
    #expect(!text.contains("queue=\""))
    #expect(!text.contains("exchange=\""))
  }

  @Test("/metrics/per-object has a series per queue, exchange and connection")
  func perObject() {
    let samples = self.samples(self.renderer.perObject(self.snapshot(), process: self.process, now: 1010))
    #expect(samples[#"rabbitmq_queue_messages_ready{vhost="/",queue="a"}"#] == "4")
    #expect(samples[#"rabbitmq_queue_messages_ready{vhost="other",queue="b"}"#] == "10")
    #expect(samples["rabbitmq_queue_messages_ready"] == nil)
    #expect(
      samples[#"rabbitmq_exchange_messages_published_total{vhost="/",exchange="amq.direct",type="direct"}"#] == "7")
    #expect(
      samples[
        #"rabbitmq_connection_incoming_bytes_total{vhost="/",connection="127.0.0.1:1 -> 127.0.0.1:5672",user="guest"}"#]
        == "5")
  }

  @Test("/metrics/detailed renders only the families and vhosts asked for")
  func detailed() {
    let text = self.renderer.detailed(self.snapshot(), families: ["queue_coarse_metrics"], vhosts: ["other"])
    let samples = self.samples(text)
    #expect(samples[#"rabbitmq_detailed_queue_messages_ready{vhost="other",queue="b"}"#] == "10")
    #expect(samples[#"rabbitmq_detailed_queue_messages_ready{vhost="/",queue="a"}"#] == nil)
    #expect(!text.contains("rabbitmq_detailed_queue_consumers"))
    #expect(!text.contains("rabbitmq_global_"))
    #expect(samples[#"rabbitmq_build_info{product="Warren",version="1.2.3",prometheus_plugin_version="1.2.3"}"#] == "1")
    let nothing = self.renderer.detailed(self.snapshot(), families: ["no_such_family"], vhosts: [])
    #expect(!nothing.contains("queue"))
  }

  @Test("the prefix is configurable")
  func prefix() {
    var renderer = self.renderer
    renderer.prefix = "warren"
    let text = renderer.aggregated(self.snapshot(), process: self.process, now: 1010)
    #expect(text.contains("\nwarren_queues 2\n"))
    #expect(!text.contains("rabbitmq_queues"))
  }

  @Test("every family has HELP and TYPE lines before its samples")
  func helpAndType() {
    let text = self.renderer.perObject(self.snapshot(), process: self.process, now: 1010)
    var described: Set<String> = []
    for line in text.split(separator: "\n") {
      if line.hasPrefix("# HELP ") {
        described.insert(String(line.split(separator: " ")[2]))
      } else if !line.hasPrefix("#") {
        let name = String(line.prefix { $0 != "{" && $0 != " " })
        let family = ["_bucket", "_sum", "_count"].reduce(name) { name, suffix in
          described.contains(name) ? name : (name.hasSuffix(suffix) ? String(name.dropLast(suffix.count)) : name)
        }
        #expect(described.contains(family), "\(name) has no HELP")
      }
    }
  }
}
