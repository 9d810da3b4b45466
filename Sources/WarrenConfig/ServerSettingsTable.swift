/// One server setting: its YAML key under `server:`, its environment variable, its command-line flag, its default and
/// what it means. The one list the loader, the environment overrides, the flags' help and the README's table are
/// made from.
public struct ServerSetting: Sendable {
  /// The key under `server:` in the YAML file.
  public let key: String
  /// The environment variable that overrides the file.
  public let environment: String
  /// The `warren serve` flag that overrides both, if there is one (without `--`).
  public let flag: String?
  /// The default, as shown to people.
  public let defaultValue: String
  /// What it is, one line.
  public let help: String
  /// Sets the value from its text form (YAML scalar, environment variable, flag); returns the problem, if any.
  let apply: @Sendable (inout ServerSettings, String) -> String?

  /// Every server setting, in the order they are documented.
  public static let all: [ServerSetting] = [
    text("amqp_bind", flag: "bind", "127.0.0.1", "the address the AMQP listener binds to") { $0.amqpBind = $1 },
    integer("amqp_port", flag: "port", "5672", "the AMQP port; 0 picks a free one (logged)", 0...65535) {
      $0.amqpPort = $1
    },
    boolean("amqp_plain", "true", "whether the plain AMQP listener opens (false: TLS only)") { $0.amqpPlain = $1 },
    integer(
      "tls_port", flag: "tls-port", "5671",
      "the AMQPS (AMQP over TLS) port, on amqp_bind, opened when tls_cert and tls_key are set; 0 picks a free one",
      0...65535
    ) { $0.tlsPort = $1 },
    text(
      "tls_cert", flag: "tls-cert", "",
      "the server's certificate chain (PEM); the key's password, if it has one, is read from WARREN_TLS_KEY_PASSWORD"
    ) { $0.tlsCertificate = $1 },
    text("tls_key", flag: "tls-key", "", "the server's private key (PEM)") { $0.tlsKey = $1 },
    text(
      "tls_ca", flag: "tls-ca", "",
      "CA certificates (PEM) that client certificates are checked against; given, clients must present one"
    ) { $0.tlsCA = $1 },
    choice(
      "tls_verify", flag: "tls-verify", "",
      "none (no client certificates), peer (checked if presented) or require; empty: require with tls_ca, else none",
      ["", "none", "peer", "require"]
    ) { $0.tlsVerify = $1 },
    choice("tls_min_version", flag: nil, "1.2", "the oldest TLS version accepted: 1.2 or 1.3", ["1.2", "1.3"]) {
      $0.tlsMinimumVersion = $1
    },
    choice(
      "tls_cert_login_from", flag: nil, "common_name",
      "the user name EXTERNAL takes from a client certificate: common_name or subject_alternative_name (its first DNS, email or URI)",
      ["common_name", "subject_alternative_name"]
    ) { $0.tlsLoginFrom = $1 },
    boolean("management_tls", "false", "whether the management port speaks HTTPS (with tls_cert and tls_key)") {
      $0.managementTLS = $1
    },
    boolean("metrics_tls", "false", "whether the metrics/health port speaks HTTPS (with tls_cert and tls_key)") {
      $0.metricsTLS = $1
    },
    text("metrics_bind", flag: nil, "127.0.0.1", "the address the HTTP listener binds to") { $0.metricsBind = $1 },
    integer(
      "metrics_port", flag: "metrics-port", "15692", "the HTTP (health, definitions, metrics) port; 0 picks a free one",
      0...65535
    ) { $0.metricsPort = $1 },
    boolean(
      "metrics_auth", "false",
      "whether /metrics needs HTTP basic auth too (a user tagged monitoring or administrator)"
    ) { $0.metricsNeedAuthentication = $1 },
    text("management_bind", flag: nil, "127.0.0.1", "the address the management API and web UI bind to") {
      $0.managementBind = $1
    },
    integer(
      "management_port", flag: "management-port", "15672",
      "the management port (RabbitMQ's HTTP API and the web UI); 0 picks a free one", 0...65535
    ) { $0.managementPort = $1 },
    integer(
      "management_max_body", flag: nil, "20971520", "the largest request body the management API reads, in bytes",
      1024...(1 << 30)
    ) { $0.managementMaxBody = $1 },
    text(
      "data_dir", flag: "data-dir", "data",
      "where durable topology and persistent messages are stored (its free space drives the disk alarm)"
    ) {
      $0.dataDirectory = $1
    },
    choice(
      "log_level", flag: "log-level", "info", "trace, debug, info, notice, warning, error or critical",
      ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    ) { $0.logLevel = $1 },
    integer("heartbeat", flag: "heartbeat", "60", "the heartbeat interval offered, in seconds; 0 disables", 0...65535) {
      $0.heartbeat = UInt16($1)
    },
    integer("frame_max", flag: "frame-max", "131072", "the frame_max offered to clients", 4096...(1 << 30)) {
      $0.frameMax = UInt32($1)
    },
    integer("channel_max", flag: "channel-max", "2047", "the channel_max offered to clients", 1...65535) {
      $0.channelMax = UInt16($1)
    },
    integer(
      "max_message_size", flag: "max-message-size", "134217728", "the largest message body accepted, in bytes",
      0...(1 << 31)
    ) { $0.maxMessageSize = $1 },
    integer(
      "consumer_timeout", flag: "consumer-timeout", "1800000",
      "milliseconds a delivery may stay unacknowledged before its channel is closed (406); 0 disables",
      0...(1 << 40)
    ) { $0.consumerTimeout = $1 },
    integer(
      "handshake_timeout", flag: "handshake-timeout", "10000",
      "milliseconds a client has from connecting (TLS handshake included) to connection.open-ok", 100...3_600_000
    ) { $0.handshakeTimeout = $1 },
    integer(
      "connection_threads", flag: "connection-threads", "0",
      "event loops for AMQPS sockets (their reads, writes and TLS) beside the broker's own; 0 keeps them on it",
      0...64
    ) { $0.connectionThreads = $1 },
    boolean(
      "connection_threads_plain", "false",
      "whether the plain AMQP listener's sockets use the connection_threads loops too"
    ) { $0.connectionThreadsPlain = $1 },
    integer(
      "connection_max", flag: nil, "0",
      "connections open at once over the whole broker (RabbitMQ's connection_max; 530 beyond it); 0 for no limit",
      0...Int(Int32.max)
    ) { $0.connectionMax = $1 },
    text("default_vhost", flag: nil, "/", "the vhost created at start, where guest has its permissions") {
      $0.defaultVirtualHost = $1
    },
    ServerSetting(
      key: "metrics_prefix", environment: "WARREN_METRICS_PREFIX", flag: nil, defaultValue: "rabbitmq",
      help: "the prefix of metric names (RabbitMQ's dashboards expect rabbitmq)"
    ) { settings, value in
      guard ServerSettings.isValidMetricsPrefix(value) else {
        return "metrics_prefix must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), not '\(value)'"
      }
      settings.metricsPrefix = value
      return nil
    },
    number(
      "memory_high_watermark", "0.4",
      "publishers are blocked above this share of memory (0 < x <= 1) or number of bytes (> 1)",
      problem: "memory_high_watermark must be a fraction of memory (0 < x <= 1) or a number of bytes", { $0 > 0 }
    ) { $0.memoryHighWatermark = $1 },
    integer(
      "disk_free_limit", flag: nil, "50000000", "publishers are blocked below this much free disk, in bytes",
      0...Int.max
    ) { $0.diskFreeLimit = $1 },
    number(
      "shutdown_timeout", "10", "seconds a graceful shutdown waits for publishers and confirms",
      problem: "shutdown_timeout must be a number of seconds, 0 or more", { $0 >= 0 }
    ) { $0.shutdownTimeout = $1 },
    number(
      "http_idle_timeout", "30",
      "seconds an HTTP connection may send nothing (mid-request or idle) before it is closed",
      problem: "http_idle_timeout must be a number of seconds above 0", { $0 > 0 }
    ) { $0.httpIdleTimeout = $1 },
  ]

  /// The setting with this YAML key.
  public static func named(_ key: String) -> ServerSetting? { self.all.first { $0.key == key } }

  /// Sets this setting from its text form; returns the problem, if any.
  public func set(_ value: String, in settings: inout ServerSettings) -> String? {
    self.apply(&settings, value)
  }

  /// Applies the `WARREN_*` variables present in `environment`; returns the problems ("NAME: problem").
  public static func applyEnvironment(_ environment: [String: String], to settings: inout ServerSettings) -> [String] {
    self.all.compactMap { setting in
      guard let value = environment[setting.environment] else { return nil }
      return setting.set(value, in: &settings).map { "\(setting.environment): \($0)" }
    }
  }

  /// The Markdown table of the settings, as the README shows it.
  public static var markdownTable: String {
    var lines = [
      "| `server:` key | environment variable | flag | default | meaning |", "| --- | --- | --- | --- | --- |",
    ]
    for s in self.all {
      lines.append(
        "| `\(s.key)` | `\(s.environment)` | \(s.flag.map { "`--\($0)`" } ?? "") | `\(s.defaultValue)` | \(s.help) |")
    }
    return lines.joined(separator: "\n")
  }

  // MARK: Kinds

  private static func environmentName(_ key: String) -> String { "WARREN_" + key.uppercased() }

  private static func text(
    _ key: String, flag: String?, _ defaultValue: String, _ help: String,
    _ set: @escaping @Sendable (inout ServerSettings, String) -> Void
  ) -> ServerSetting {
    ServerSetting(
      key: key, environment: environmentName(key), flag: flag, defaultValue: defaultValue, help: help
    ) { settings, value in
      set(&settings, value)
      return nil
    }
  }

  private static func choice(
    _ key: String, flag: String?, _ defaultValue: String, _ help: String, _ choices: [String],
    _ set: @escaping @Sendable (inout ServerSettings, String) -> Void
  ) -> ServerSetting {
    ServerSetting(
      key: key, environment: environmentName(key), flag: flag, defaultValue: defaultValue, help: help
    ) { settings, value in
      guard choices.contains(value) else {
        return "\(key) must be one of \(choices.joined(separator: ", ")), not '\(value)'"
      }
      set(&settings, value)
      return nil
    }
  }

  private static func number(
    _ key: String, _ defaultValue: String, _ help: String, problem: String,
    _ accepts: @escaping @Sendable (Double) -> Bool, _ set: @escaping @Sendable (inout ServerSettings, Double) -> Void
  ) -> ServerSetting {
    ServerSetting(
      key: key, environment: environmentName(key), flag: nil, defaultValue: defaultValue, help: help
    ) { settings, value in
      guard let number = Double(value), accepts(number) else { return problem }
      set(&settings, number)
      return nil
    }
  }

  private static func integer(
    _ key: String, flag: String?, _ defaultValue: String, _ help: String, _ range: ClosedRange<Int>,
    _ set: @escaping @Sendable (inout ServerSettings, Int) -> Void
  ) -> ServerSetting {
    ServerSetting(
      key: key, environment: environmentName(key), flag: flag, defaultValue: defaultValue, help: help
    ) { settings, value in
      guard let number = Int(value) else { return "\(key) must be an integer" }
      guard range.contains(number) else {
        return "\(key) must be between \(range.lowerBound) and \(range.upperBound), not \(number)"
      }
      set(&settings, number)
      return nil
    }
  }

  private static func boolean(
    _ key: String, _ defaultValue: String, _ help: String,
    _ set: @escaping @Sendable (inout ServerSettings, Bool) -> Void
  ) -> ServerSetting {
    ServerSetting(
      key: key, environment: environmentName(key), flag: nil, defaultValue: defaultValue, help: help
    ) { settings, value in
      switch value.lowercased() {
      case "true", "yes", "on", "1": set(&settings, true)
      case "false", "no", "off", "0": set(&settings, false)
      default: return "\(key) must be true or false, not '\(value)'"
      }
      return nil
    }
  }
}
