import WarrenCore
import WarrenSystem

/// Renders a ``MetricsSnapshot`` as RabbitMQ's rabbitmq_prometheus plugin does, with its metric and label names
/// where the meaning is the same, so that dashboards made for RabbitMQ work.
///
/// - `/metrics`: aggregated, the same size whatever the number of queues, exchanges and connections.
/// - `/metrics/per-object`: the same, with a series per queue, exchange and connection instead of their totals.
/// - `/metrics/detailed?family=...&vhost=...`: only the families asked for, per object, under `<prefix>_detailed_`.
public struct MetricsRenderer: Sendable {
  /// The metric name prefix (`rabbitmq` unless configured).
  public var prefix: String
  /// The node name in `<prefix>_identity_info` (RabbitMQ's `rabbitmq_node` label).
  public var nodeName: String
  /// The cluster name in `<prefix>_identity_info`.
  public var clusterName: String
  /// Warren's version, for `<prefix>_build_info`.
  public var version: String
  /// When the process started (seconds since 1970).
  public var startTime: Double

  public init(prefix: String = "rabbitmq", nodeName: String, clusterName: String, version: String, startTime: Double) {
    self.prefix = prefix
    self.nodeName = nodeName
    self.clusterName = clusterName
    self.version = version
    self.startTime = startTime
  }

  /// The families `/metrics/detailed` knows, by RabbitMQ's family names.
  public static let detailedFamilies: [String] = [
    "connection_churn_metrics", "queue_coarse_metrics", "queue_consumer_count", "queue_metrics", "exchange_metrics",
    "connection_coarse_metrics", "connection_metrics",
  ]

  static let amqp: [(String, String)] = [("protocol", "amqp091")]

  /// `/metrics`: every family with totals in place of per-object series.
  public func aggregated(_ snapshot: MetricsSnapshot, process: ProcessStatistics, now: Double) -> String {
    var out = PrometheusTextWriter()
    self.writeGlobal(&out, snapshot, process: process, now: now)
    self.writeQueues(&out, [snapshot.queueTotals], labelled: false, prefix: self.prefix + "_")
    self.writeExchanges(&out, snapshot.exchanges, totalPublished: snapshot.counters.messagesReceived, labelled: false)
    self.writeConnections(&out, snapshot, labelled: false, prefix: self.prefix + "_")
    return out.text
  }

  /// `/metrics/per-object`: every family, with a series per queue, exchange and connection.
  public func perObject(_ snapshot: MetricsSnapshot, process: ProcessStatistics, now: Double) -> String {
    var out = PrometheusTextWriter()
    self.writeGlobal(&out, snapshot, process: process, now: now)
    self.writeQueues(&out, snapshot.queues, labelled: true, prefix: self.prefix + "_")
    self.writeExchanges(&out, snapshot.exchanges, totalPublished: 0, labelled: true)
    self.writeConnections(&out, snapshot, labelled: true, prefix: self.prefix + "_")
    return out.text
  }

  /// `/metrics/detailed`: the families asked for (RabbitMQ's names), per object, for the vhosts asked for (all when
  /// none are given); unknown family names are ignored, as RabbitMQ does.
  public func detailed(_ snapshot: MetricsSnapshot, families: Set<String>, vhosts: Set<String>) -> String {
    var out = PrometheusTextWriter()
    let p = self.prefix + "_detailed_"
    let inScope: (String) -> Bool = { vhosts.isEmpty || vhosts.contains($0) }
    if families.contains("connection_churn_metrics") {
      self.writeChurn(&out, snapshot.counters, prefix: p)
    }
    let queues = snapshot.queues.filter { inScope($0.vhost) }
    if families.contains("queue_coarse_metrics") {
      self.writeQueueFamilies(&out, queues, Self.queueCoarse, prefix: p)
    }
    if families.contains("queue_consumer_count") {
      self.writeQueueFamilies(&out, queues, Self.queueConsumers, prefix: p)
    }
    if families.contains("queue_metrics") {
      self.writeQueueFamilies(&out, queues, Self.queueDetails, prefix: p)
    }
    if families.contains("exchange_metrics") {
      out.family(p + "exchange_messages_published_total", .counter, help: Self.exchangePublishedHelp)
      for exchange in snapshot.exchanges where inScope(exchange.vhost) {
        out.sample(
          p + "exchange_messages_published_total", [("vhost", exchange.vhost), ("exchange", exchange.name)],
          exchange.published)
      }
    }
    var scoped = snapshot
    scoped.connections = snapshot.connections.filter { inScope($0.vhost) }
    if families.contains("connection_coarse_metrics") {
      self.writeConnectionFamilies(&out, scoped.connections, Self.connectionCoarse, prefix: p)
    }
    if families.contains("connection_metrics") {
      self.writeConnectionFamilies(&out, scoped.connections, Self.connectionDetails, prefix: p)
    }
    self.writeInfo(&out)
    return out.text
  }

  // MARK: Families

  private func writeInfo(_ out: inout PrometheusTextWriter) {
    let p = self.prefix + "_"
    out.single(
      p + "build_info", .gauge, help: "Warren version info (the version of the broker, Warren)",
      [("product", "Warren"), ("version", self.version), ("prometheus_plugin_version", self.version)], 1)
    out.single(
      p + "identity_info", .gauge, help: "Warren node and cluster identity info (RabbitMQ's label names)",
      [
        ("rabbitmq_node", self.nodeName), ("rabbitmq_cluster", self.clusterName),
        ("rabbitmq_cluster_permanent_id", "warren-" + self.clusterName),
      ], 1)
  }

  private func writeChurn(_ out: inout PrometheusTextWriter, _ c: BrokerCounters.Values, prefix p: String) {
    out.single(
      p + "connections_opened_total", .counter, help: "Total number of connections opened", c.connectionsOpened)
    out.single(
      p + "connections_closed_total", .counter, help: "Total number of connections closed or terminated",
      c.connectionsClosed)
    out.single(p + "channels_opened_total", .counter, help: "Total number of channels opened", c.channelsOpened)
    out.single(p + "channels_closed_total", .counter, help: "Total number of channels closed", c.channelsClosed)
    out.single(p + "queues_declared_total", .counter, help: "Total number of queues declared", c.queuesDeclared)
    out.single(p + "queues_created_total", .counter, help: "Total number of queues created", c.queuesCreated)
    out.single(p + "queues_deleted_total", .counter, help: "Total number of queues deleted", c.queuesDeleted)
  }

  private func writeGlobal(
    _ out: inout PrometheusTextWriter, _ s: MetricsSnapshot, process: ProcessStatistics, now: Double
  ) {
    let p = self.prefix + "_"
    let c = s.counters
    self.writeInfo(&out)
    self.writeChurn(&out, c, prefix: p)
    out.single(p + "connections", .gauge, help: "Connections currently open", s.connectionCount)
    out.single(p + "channels", .gauge, help: "Channels currently open", s.channelCount)
    out.single(p + "consumers", .gauge, help: "Consumers currently connected", s.consumerCount)
    out.single(p + "queues", .gauge, help: "Queues available", s.queueCount)

    let amqp = Self.amqp
    let g = p + "global_"
    let globals: [(String, String, Int)] = [
      ("messages_received_total", "Total number of messages received from publishers", c.messagesReceived),
      (
        "messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations",
        c.messagesReceivedConfirm
      ),
      ("messages_routed_total", "Total number of messages routed to queues or streams", c.messagesRouted),
      (
        "messages_unroutable_dropped_total",
        "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
        c.messagesUnroutableDropped
      ),
      (
        "messages_unroutable_returned_total",
        "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
        c.messagesUnroutableReturned
      ),
      ("messages_confirmed_total", "Total number of messages confirmed to publishers", c.messagesConfirmed),
      ("messages_delivered_total", "Total number of messages delivered to consumers", c.messagesDelivered),
      (
        "messages_delivered_consume_auto_ack_total",
        "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
        c.messagesDeliveredConsumeAutoAck
      ),
      (
        "messages_delivered_consume_manual_ack_total",
        "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
        c.messagesDeliveredConsumeManualAck
      ),
      (
        "messages_delivered_get_auto_ack_total",
        "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
        c.messagesDeliveredGetAutoAck
      ),
      (
        "messages_delivered_get_manual_ack_total",
        "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
        c.messagesDeliveredGetManualAck
      ),
      ("messages_get_empty_total", "Total number of times basic.get operations fetched no message", c.messagesGetEmpty),
      ("messages_redelivered_total", "Total number of messages redelivered to consumers", c.messagesRedelivered),
      (
        "messages_acknowledged_total", "Total number of messages acknowledged by consumers", c.messagesAcknowledged
      ),
    ]
    for (name, help, value) in globals { out.single(g + name, .counter, help: help, amqp, value) }
    out.single(g + "consumers", .gauge, help: "Current number of consumers", amqp, s.consumerCount)
    // As RabbitMQ 3.13: per reason, dead-lettered to an exchange (at_most_once) or dropped without one (disabled).
    for (index, reason) in DeadLetterReason.allCases.enumerated() {
      let name = g + "messages_dead_lettered_\(reason.rawValue)_total"
      out.family(name, .counter, help: "Total number of messages dead-lettered due to \(reason.rawValue)")
      for (strategy, counts) in [("at_most_once", c.messagesDeadLettered), ("disabled", c.messagesDeadLetterDisabled)] {
        out.sample(name, [("queue_type", "rabbit_classic_queue"), ("dead_letter_strategy", strategy)], counts[index])
      }
    }
    out.histogram(
      g + "message_size_bytes", help: "Size of messages received from publishers", amqp,
      bounds: BrokerCounters.messageSizeBuckets, counts: c.messageSizeCounts, sum: c.messageSizeSum)

    // The channel families of RabbitMQ's overview dashboard, summed over every channel.
    let channels: [(String, String, Int)] = [
      (
        "channel_messages_published_total", "Total number of messages published into an exchange on a channel",
        c.messagesReceived
      ),
      (
        "channel_messages_confirmed_total",
        "Total number of messages published into an exchange and confirmed on the channel", c.messagesConfirmed
      ),
      (
        "channel_messages_unroutable_returned_total",
        "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
        c.messagesUnroutableReturned
      ),
      (
        "channel_messages_unroutable_dropped_total",
        "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
        c.messagesUnroutableDropped
      ),
      (
        "channel_messages_delivered_total",
        "Total number of messages delivered to consumers in automatic acknowledgement mode",
        c.messagesDeliveredConsumeAutoAck
      ),
      (
        "channel_messages_delivered_ack_total",
        "Total number of messages delivered to consumers in manual acknowledgement mode",
        c.messagesDeliveredConsumeManualAck
      ),
      (
        "channel_get_total", "Total number of messages fetched with basic.get in automatic acknowledgement mode",
        c.messagesDeliveredGetAutoAck
      ),
      (
        "channel_get_ack_total", "Total number of messages fetched with basic.get in manual acknowledgement mode",
        c.messagesDeliveredGetManualAck
      ),
      ("channel_get_empty_total", "Total number of times basic.get operations fetched no message", c.messagesGetEmpty),
      (
        "channel_messages_redelivered_total", "Total number of messages redelivered to consumers", c.messagesRedelivered
      ),
      ("channel_messages_acked_total", "Total number of messages acknowledged by consumers", c.messagesAcknowledged),
    ]
    for (name, help, value) in channels { out.single(p + name, .counter, help: help, value) }

    let attempts = c.authAttemptsSucceeded + c.authAttemptsFailed
    out.single(p + "auth_attempts_total", .counter, help: "Total number of authorization attempts", amqp, attempts)
    out.single(
      p + "auth_attempts_succeeded_total", .counter, help: "Total number of successful authentication attempts", amqp,
      c.authAttemptsSucceeded)
    out.single(
      p + "auth_attempts_failed_total", .counter, help: "Total number of failed authentication attempts", amqp,
      c.authAttemptsFailed)

    out.single(p + "process_resident_memory_bytes", .gauge, help: "Memory used in bytes", process.residentMemory)
    out.single(p + "process_open_fds", .gauge, help: "Open file descriptors", process.openFileDescriptors)
    out.single(p + "process_max_fds", .gauge, help: "Open file descriptors limit", process.maxFileDescriptors)
    out.single(p + "process_open_tcp_sockets", .gauge, help: "Open TCP sockets", s.connectionCount)
    out.single(
      p + "process_max_tcp_sockets", .gauge, help: "Open TCP sockets limit", process.maxFileDescriptors)
    out.single(p + "disk_space_available_bytes", .gauge, help: "Disk space available in bytes", process.diskFree)
    out.single(
      p + "resident_memory_limit_bytes", .gauge, help: "Memory high watermark in bytes", s.alarms.memoryLimit)
    out.single(
      p + "disk_space_available_limit_bytes", .gauge, help: "Free disk space low watermark in bytes",
      s.alarms.diskFreeLimit)
    out.single(
      p + "alarms_memory_used_watermark", .gauge, help: "is 1 if VM memory watermark alarm is in effect",
      s.alarms.memory ? 1 : 0)
    out.single(
      p + "alarms_free_disk_space_watermark", .gauge, help: "is 1 if free disk space watermark alarm is in effect",
      s.alarms.disk ? 1 : 0)
    out.single(
      p + "alarms_file_descriptor_limit", .gauge, help: "is 1 if file descriptor limit alarm is in effect", 0)
    if !s.limits.isEmpty {
      // Warren's own families: RabbitMQ's Prometheus plugin does not export limits.
      out.family(p + "limit", .gauge, help: "A vhost, user or node limit in effect (-1: none)")
      for limit in s.limits {
        out.sample(p + "limit", [("kind", limit.kind), ("name", limit.name), ("limit", limit.limit)], limit.value)
      }
      out.family(p + "limit_used", .gauge, help: "What a limit counts now (connections, channels or queues)")
      for limit in s.limits {
        out.sample(
          p + "limit_used", [("kind", limit.kind), ("name", limit.name), ("limit", limit.limit)], limit.current)
      }
    }
    out.family(p + "uptime_seconds", .gauge, help: "Time since the broker started, in seconds")
    out.sample(p + "uptime_seconds", [], (now - self.startTime).rounded(toPlaces: 3))
    out.family("process_start_time_seconds", .gauge, help: "Start time of the process since unix epoch in seconds.")
    out.sample("process_start_time_seconds", [], self.startTime.rounded(toPlaces: 3))
  }

  typealias QueueFamily = (
    name: String, kind: PrometheusTextWriter.Kind, help: String, value: @Sendable (QueueSample) -> Int
  )

  static let queueCoarse: [QueueFamily] = [
    ("queue_messages_ready", .gauge, "Messages ready to be delivered to consumers", { $0.ready }),
    ("queue_messages_unacked", .gauge, "Messages delivered to consumers but not yet acknowledged", { $0.unacked }),
    (
      "queue_messages", .gauge, "Sum of ready and unacknowledged messages - total queue depth",
      { $0.ready + $0.unacked }
    ),
  ]
  static let queueConsumers: [QueueFamily] = [
    ("queue_consumers", .gauge, "Consumers on a queue", { $0.consumers })
  ]
  static let queueDetails: [QueueFamily] = [
    (
      "queue_messages_bytes", .gauge, "Size in bytes of ready and unacknowledged messages",
      { $0.readyBytes + $0.unackedBytes }
    ),
    ("queue_messages_ready_bytes", .gauge, "Size in bytes of ready messages", { $0.readyBytes }),
    ("queue_messages_unacked_bytes", .gauge, "Size in bytes of all unacknowledged messages", { $0.unackedBytes }),
    ("queue_messages_published_total", .counter, "Total number of messages published to queues", { $0.published }),
  ]

  private func writeQueues(_ out: inout PrometheusTextWriter, _ queues: [QueueSample], labelled: Bool, prefix: String) {
    for families in [Self.queueCoarse, Self.queueConsumers, Self.queueDetails] {
      self.writeQueueFamilies(&out, queues, families, prefix: prefix, labelled: labelled)
    }
  }

  private func writeQueueFamilies(
    _ out: inout PrometheusTextWriter, _ queues: [QueueSample], _ families: [QueueFamily], prefix: String,
    labelled: Bool = true
  ) {
    for family in families {
      out.family(prefix + family.name, family.kind, help: family.help)
      for queue in queues {
        out.sample(
          prefix + family.name, labelled ? [("vhost", queue.vhost), ("queue", queue.name)] : [], family.value(queue))
      }
    }
  }

  static let exchangePublishedHelp = "Total number of messages published into an exchange by clients"

  private func writeExchanges(
    _ out: inout PrometheusTextWriter, _ exchanges: [ExchangeSample], totalPublished: Int, labelled: Bool
  ) {
    let name = self.prefix + "_exchange_messages_published_total"
    out.family(name, .counter, help: Self.exchangePublishedHelp)
    if labelled {
      for exchange in exchanges {
        out.sample(
          name, [("vhost", exchange.vhost), ("exchange", exchange.name), ("type", exchange.type)], exchange.published)
      }
    } else {
      out.sample(name, [], totalPublished)
    }
  }

  typealias ConnectionFamily = (
    name: String, kind: PrometheusTextWriter.Kind, help: String, value: @Sendable (ConnectionSample) -> Int
  )

  static let connectionCoarse: [ConnectionFamily] = [
    (
      "connection_incoming_bytes_total", .counter, "Total number of bytes received on a connection",
      { $0.bytesReceived }
    ),
    ("connection_outgoing_bytes_total", .counter, "Total number of bytes sent on a connection", { $0.bytesSent }),
  ]
  static let connectionDetails: [ConnectionFamily] = [
    ("connection_channels", .gauge, "Channels on a connection", { $0.channels })
  ]

  private func writeConnections(
    _ out: inout PrometheusTextWriter, _ s: MetricsSnapshot, labelled: Bool, prefix: String
  ) {
    if labelled {
      self.writeConnectionFamilies(&out, s.connections, Self.connectionCoarse + Self.connectionDetails, prefix: prefix)
      return
    }
    let total = ConnectionSample(
      vhost: "", name: "", user: "", channels: s.channelCount, bytesReceived: s.connectionBytesReceived,
      bytesSent: s.connectionBytesSent)
    for family in Self.connectionCoarse + Self.connectionDetails {
      out.family(prefix + family.name, family.kind, help: family.help)
      out.sample(prefix + family.name, [], family.value(total))
    }
  }

  private func writeConnectionFamilies(
    _ out: inout PrometheusTextWriter, _ connections: [ConnectionSample], _ families: [ConnectionFamily],
    prefix: String
  ) {
    for family in families {
      out.family(prefix + family.name, family.kind, help: family.help)
      for connection in connections {
        out.sample(
          prefix + family.name,
          [("vhost", connection.vhost), ("connection", connection.name), ("user", connection.user)],
          family.value(connection))
      }
    }
  }
}

extension Double {
  fileprivate func rounded(toPlaces places: Int) -> Double {
    var scale = 1.0
    for _ in 0..<places { scale *= 10 }
    return (self * scale).rounded() / scale
  }
}
