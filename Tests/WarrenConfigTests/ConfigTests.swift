import AMQPProtocol
import Foundation
import NIOCore
import Testing
import TopicExchange
import WarrenConfig
import WarrenCore

func registry() -> ExchangeRegistry {
  var registry = ExchangeRegistry()
  registry.register(TopicExchangeType())
  return registry
}

func problems(_ yaml: String) -> [String] {
  do {
    _ = try ConfigLoader.load(text: yaml, file: "w.yaml", registry: registry())
    return []
  } catch {
    return error.problems.map(\.description)
  }
}

@Suite("YAML configuration")
struct ConfigTests {
  static let good = """
    server:
      amqp_port: 5673
      heartbeat: 30
      log_level: debug
    vhosts: ["/", "staging"]
    users:
      - name: app
        password: s3cret
    exchanges:
      - name: events
        type: topic
      - name: audit
        vhost: staging
        type: fanout
        durable: false
    queues:
      - name: orders
        arguments:
          x-max-length: 1000
          x-dead-letter-exchange: events
      - name: log
        vhost: staging
    bindings:
      - source: events
        destination: orders
        routing_key: "order.*"
      - source: audit
        vhost: staging
        destination: log
      - source: amq.fanout
        destination: events
        destination_type: exchange
    """

  @Test("the operations keys: metrics prefix, watermarks, shutdown timeout")
  func operationsKeys() throws {
    let yaml =
      "server:\n  metrics_prefix: warren\n  memory_high_watermark: 0.5\n  disk_free_limit: 1000\n"
      + "  shutdown_timeout: 2.5\n"
    let server = try ConfigLoader.load(text: yaml, file: "w.yaml", registry: registry()).server
    #expect(server.metricsPrefix == "warren" && server.diskFreeLimit == 1000 && server.shutdownTimeout == 2.5)
    #expect(server.memoryLimit(totalMemory: 1000) == 500)
    var bytes = server
    bytes.memoryHighWatermark = 4096
    #expect(bytes.memoryLimit(totalMemory: 1000) == 4096)
  }

  @Test("a good file is read and applied, and applying it again changes nothing")
  func good() throws {
    let configuration = try ConfigLoader.load(text: Self.good, file: "w.yaml", registry: registry())
    #expect(configuration.server.amqpPort == 5673 && configuration.server.heartbeat == 30)
    #expect(configuration.vhosts == ["/", "staging"])
    #expect(configuration.queues[0].arguments["x-max-length"]?.integerValue == 1000)
    let broker = Broker(registry: registry())
    try configuration.apply(to: broker)
    try configuration.apply(to: broker)
    let root = try #require(broker.vhosts["/"])
    #expect(root.exchanges["events"]?.type.name == "topic")
    let orders = try #require(root.queues["orders"])
    #expect(
      root.publish(
        Message.make(exchange: "events", routingKey: "order.new", body: .init()), to: root.exchanges["events"]!
      ).accepted == 1)
    #expect(orders.messageCount == 1)
    #expect(
      root.publish(
        Message.make(exchange: "amq.fanout", routingKey: "order.x", body: .init()), to: root.exchanges["amq.fanout"]!
      )
      .accepted == 1)
    #expect(broker.vhosts["staging"]?.queues["log"] != nil)
    #expect(broker.authenticate(user: "app", password: "s3cret", fromLoopback: false) != nil)
  }

  @Test("an empty file is the defaults")
  func empty() throws {
    let configuration = try ConfigLoader.load(text: "", file: "w.yaml", registry: registry())
    #expect(configuration == WarrenConfiguration())
  }

  /// Bad files, and the problems they must produce (file:line:column: message).
  static let bad: [(String, [String])] = [
    (
      "serverr: {}",
      [
        "w.yaml:1:1: unknown key 'serverr' in the top level (expected one of: server, vhosts, users, permissions, policies, operator_policies, exchanges, queues, bindings)"
      ]
    ),
    ("server:\n  amqp_port: high", ["w.yaml:2:14: amqp_port must be an integer"]),
    ("server:\n  amqp_port: 70000", ["w.yaml:2:14: amqp_port must be between 0 and 65535, not 70000"]),
    (
      "server:\n  metrics_prefix: 9lives",
      ["w.yaml:2:19: metrics_prefix must be a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), not '9lives'"]
    ),
    (
      "server:\n  memory_high_watermark: lots",
      ["w.yaml:2:26: memory_high_watermark must be a fraction of memory (0 < x <= 1) or a number of bytes"]
    ),
    ("server:\n  shutdown_timeout: -1", ["w.yaml:2:21: shutdown_timeout must be a number of seconds, 0 or more"]),
    (
      "server:\n  log_level: loud",
      ["w.yaml:2:14: log_level must be one of trace, debug, info, notice, warning, error, critical, not 'loud'"]
    ),
    (
      "exchanges:\n  - name: x\n    type: nosuch",
      ["w.yaml:3:11: unknown exchange type 'nosuch' (known: direct, fanout, topic)"]
    ),
    (
      "exchanges:\n  - name: x\n    type: direct\n  - name: x\n    type: fanout",
      ["w.yaml:4:5: duplicate exchange 'x' in vhost '/'"]
    ),
    (
      "queues:\n  - name: q\n    arguments:\n      x-message-ttl: -5",
      ["w.yaml:4:7: PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-5}"]
    ),
    ("queues:\n  - name: q\n    durable: maybe", ["w.yaml:3:14: durable must be true or false"]),
    (
      "bindings:\n  - source: nowhere\n    destination: nothing",
      [
        "w.yaml:2:5: binding source: no exchange 'nowhere' in vhost '/'",
        "w.yaml:2:5: binding destination: no queue 'nothing' in vhost '/'",
      ]
    ),
    ("queues: {name: q}", ["w.yaml:1:9: queues must be a list"]),
    ("server:\n  heartbeat: 10\n  heartbeat: 20", ["w.yaml:2:3: duplicate key 'heartbeat' in a mapping"]),
    (
      "queues:\n  - name: [unclosed",
      ["w.yaml:3:1: not valid YAML: while parsing a flow sequence, did not find expected ',' or ']'"]
    ),
  ]

  @Test("bad files give every problem with its line and column", arguments: 0..<Self.bad.count)
  func badFiles(index: Int) {
    let (yaml, expected) = Self.bad[index]
    #expect(problems(yaml) == expected)
  }

  @Test("several problems are all reported, and nothing is applied")
  func several() {
    let found = problems("server:\n  amqp_port: x\nqueues:\n  - name: q\n    nope: 1\n")
    #expect(found.count == 2)
  }

  @Test("a user's password may come from the environment")
  func environment() throws {
    setenv("WARREN_TEST_SECRET", "from-env", 1)
    let configuration = try ConfigLoader.load(
      text: "users:\n  - name: admin\n    password: ${WARREN_TEST_SECRET}", file: "w.yaml", registry: registry())
    #expect(configuration.users == [UserDefinition(name: "admin", password: "from-env")])
  }
}

@Suite("Users and permissions")
struct PermissionTests {
  @Test("permissions are checked against the three patterns; an empty pattern refuses all")
  func patterns() throws {
    let broker = Broker()
    broker.users["app"] = User(name: "app", password: "p")
    broker.permissions["app"] = ["/": Permission(configure: "^app-", write: "", read: "^(app-|shared)")]
    #expect(broker.mayOpen(virtualHost: "/", user: "app"))
    #expect(!broker.mayOpen(virtualHost: "other", user: "app"))
    try broker.authorize(.configure, "queue", "app-orders", vhost: "/", user: "app")
    #expect(throws: BrokerError.accessRefused("access to queue 'orders' in vhost '/' refused for user 'app'")) {
      try broker.authorize(.configure, "queue", "orders", vhost: "/", user: "app")
    }
    #expect(throws: BrokerError.self) { try broker.authorize(.write, "exchange", "app-x", vhost: "/", user: "app") }
    try broker.authorize(.read, "queue", "shared", vhost: "/", user: "app")
    try broker.authorize(.write, "exchange", "anything", vhost: "/", user: "guest")
  }

  @Test("permissions in a file: bad patterns, unknown users and vhosts are problems")
  func fromFile() throws {
    let yaml = """
      vhosts: ["/"]
      users:
        - {name: app, password: p}
      permissions:
        - {user: app, vhost: /, configure: "^app-", write: "(", read: ".*"}
        - {user: ghost, vhost: /}
        - {user: app, vhost: elsewhere}
      policies:
        - {name: limit, pattern: "^app-", apply_to: queues, definition: {max-length: 10}}
        - {name: bad, pattern: "[", apply_to: streams}
      """
    #expect(
      problems(yaml) == [
        "w.yaml:5:54: write is not a valid regular expression: '('",
        "w.yaml:10:26: pattern is not a valid regular expression: '['",
        "w.yaml:10:41: apply_to must be all, queues or exchanges, not 'streams'",
        "w.yaml:6:5: permissions for an undeclared user 'ghost'",
        "w.yaml:7:5: permissions in an undeclared vhost 'elsewhere'",
      ])
  }
}

@Suite("Policies in a file")
struct PolicyFileTests {
  @Test("policy values are checked as queue arguments; an operator policy sets only limits; others' keys load")
  func checked() {
    let yaml = """
      policies:
        - {name: ttl, pattern: ".*", definition: {message-ttl: -5, ha-mode: all}}
        - {name: overflow, pattern: ".*", definition: {overflow: sideways}}
      operator_policies:
        - {name: op, pattern: ".*", definition: {dead-letter-exchange: dlx}}
      """
    #expect(
      problems(yaml) == [
        "w.yaml:2:44: policy 'ttl': invalid value for 'message-ttl': {value_negative,-5}",
        "w.yaml:3:49: policy 'overflow': invalid value for 'overflow': {invalid_overflow_value,'sideways'}",
        "w.yaml:5:43: policy 'op': an operator policy cannot set 'dead-letter-exchange'",
      ])
  }

  @Test("a file's policies apply to the broker's queues, replacing the vhost's earlier ones")
  func applied() throws {
    let yaml = """
      policies:
        - {name: bounded, vhost: /, pattern: "^jobs", apply_to: queues, priority: 1, definition: {max-length: 2}}
      operator_policies:
        - {name: cap, vhost: /, pattern: ".*", definition: {message-ttl: 60000}}
      queues:
        - {name: jobs}
      """
    let configuration = try ConfigLoader.load(text: yaml, file: "w.yaml", registry: registry())
    let broker = Broker()
    try configuration.apply(to: broker)
    let queue = try #require(broker.vhosts["/"]?.queues["jobs"])
    #expect(queue.options.maxLength == 2 && queue.options.messageTTL == 60_000)
    #expect(
      WarrenConfiguration().applyPolicies(to: broker) == [
        "policies of vhost '/': none", "queue 'jobs' in vhost '/': policy none, operator policy none",
      ])
    #expect(queue.options.maxLength == nil)
  }
}

@Suite("RabbitMQ definitions")
struct DefinitionsTests {
  @Test("RabbitMQ's password hashes verify (the hash exported by RabbitMQ 3.10 for 'fixture-password')")
  func passwordHash() {
    let user = User(name: "fixture", passwordHash: "HHD3EFUfQPyr4vwLNU0MlXbFX+EJ6yJXKPlrxr2RJnA7/Fss")
    #expect(user.verify(password: "fixture-password"))
    #expect(!user.verify(password: "fixture-passwore"))
    let hashed = User(name: "u", password: "s3cret")
    #expect(hashed.verify(password: "s3cret") && User.isValidHash(hashed.passwordHash))
  }

  /// The shape RabbitMQ 3.10 exports (GET /api/definitions after PUT /api/vhost-limits/%2F/max-connections 7 and
  /// /api/user-limits/guest/max-channels 3): vhost limits as a runtime parameter, user limits on the user.
  static let rabbitExport = """
    {"rabbit_version": "3.10.8", "vhosts": [{"name": "/"}, {"name": "v2", "limits": []}],
     "parameters": [{"value": {"max-connections": 7}, "vhost": "/", "component": "vhost-limits", "name": "limits"},
                    {"value": {"uri": "amqp://x"}, "vhost": "/", "component": "federation-upstream", "name": "up"}],
     "users": [{"name": "guest", "password_hash": "S0i4Hfr1iRiuNX4Fkk8CqVMf+ioAEtZUJ2fFaKQDo3pQ1eWz",
                "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"],
                "limits": {"max-channels": 3}}]}
    """

  @Test("vhost limits come from RabbitMQ's vhost-limits parameters, and go back out as parameters")
  func limitParameters() throws {
    let imported = try ConfigLoader.load(text: Self.rabbitExport, file: "defs.json", registry: registry())
    #expect(imported.vhostLimits["/"] == VirtualHostLimits(maxConnections: 7))
    #expect(imported.vhostLimits["v2"] == nil)
    #expect(imported.userLimits["guest"] == UserLimits(maxChannels: 3))
    let json = try imported.rabbitMQDefinitionsJSON()
    let object = try #require(
      try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    let parameters = try #require(object["parameters"] as? [[String: Any]])
    #expect(parameters.count == 1)
    #expect(parameters.first?["component"] as? String == "vhost-limits")
    #expect(parameters.first?["vhost"] as? String == "/")
    #expect((parameters.first?["value"] as? [String: Int]) == ["max-connections": 7])
    let again = try ConfigLoader.load(text: json, file: "again.json", registry: registry())
    #expect(again.vhostLimits == imported.vhostLimits && again.userLimits == imported.userLimits)
  }

  @Test("a vhost-limits parameter for a vhost the file does not declare is a problem with its line")
  func limitParameterForUndeclaredVhost() {
    let text = """
      {"rabbit_version": "3.10.8", "vhosts": [{"name": "/"}],
       "parameters": [
         {"value": {"max-queues": 9}, "vhost": "v3", "component": "vhost-limits", "name": "limits"}]}
      """
    do {
      _ = try ConfigLoader.load(text: text, file: "defs.json", registry: registry())
      Issue.record("loaded")
    } catch {
      #expect(error.problems.map(\.description) == ["defs.json:3:4: vhost-limits for an undeclared vhost 'v3'"])
    }
  }

  @Test("YAML -> RabbitMQ JSON -> configuration -> YAML keeps the topology")
  func roundTrip() throws {
    let original = try ConfigLoader.load(text: ConfigTests.good, file: "w.yaml", registry: registry())
    let json = try original.rabbitMQDefinitionsJSON()
    let imported = try ConfigLoader.load(text: json, file: "defs.json", registry: registry())
    #expect(imported.exchanges == original.exchanges)
    #expect(imported.queues == original.queues)
    #expect(imported.bindings == original.bindings)
    #expect(imported.vhosts == original.vhosts)
    #expect(imported.users.map(\.name) == original.users.map(\.name))
    // The plaintext password became a RabbitMQ hash that still verifies.
    let broker = Broker(registry: registry())
    try imported.apply(to: broker)
    #expect(broker.authenticate(user: "app", password: "s3cret", fromLoopback: true) != nil)
    let yaml = try imported.yaml()
    let again = try ConfigLoader.load(text: yaml, file: "again.yaml", registry: registry())
    #expect(again.exchanges == original.exchanges && again.queues == original.queues)
  }
}

@Suite("The settings table")
struct SettingsTableTests {
  @Test("each default in the table is the built-in default, and keys and variables are unique")
  func defaults() {
    for setting in ServerSetting.all {
      var settings = ServerSettings()
      #expect(setting.set(setting.defaultValue, in: &settings) == nil, "\(setting.key)")
      #expect(settings == ServerSettings(), "\(setting.key): the documented default differs from the built-in one")
    }
    #expect(Set(ServerSetting.all.map(\.key)).count == ServerSetting.all.count)
    #expect(Set(ServerSetting.all.map(\.environment)).count == ServerSetting.all.count)
  }

  @Test("environment variables go through the same checks as the file")
  func environment() {
    var settings = ServerSettings()
    let problems = ServerSetting.applyEnvironment(
      ["WARREN_AMQP_PORT": "70000", "WARREN_HEARTBEAT": "5", "WARREN_LOG_LEVEL": "loud"], to: &settings)
    #expect(settings.heartbeat == 5 && settings.amqpPort == 5672)
    #expect(
      problems.sorted() == [
        "WARREN_AMQP_PORT: amqp_port must be between 0 and 65535, not 70000",
        "WARREN_LOG_LEVEL: log_level must be one of trace, debug, info, notice, warning, error, critical, not 'loud'",
      ])
  }

  @Test("the README shows the table as the code has it")
  func readme() throws {
    let readme = try String(
      contentsOfFile: #filePath.components(separatedBy: "/Tests/")[0] + "/README.md", encoding: .utf8)
    #expect(readme.contains(ServerSetting.markdownTable))
  }
}
