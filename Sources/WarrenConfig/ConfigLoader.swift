import AMQPProtocol
import Foundation
import WarrenCore
import Yams

/// Reads a YAML configuration and checks all of it, collecting every problem with its line and column.
public struct ConfigLoader {
  let file: String
  let registry: ExchangeRegistry
  private(set) var problems: [ConfigProblem] = []
  /// Whether the file is a RabbitMQ definitions export (its key spellings: `apply-to`, queue `type`, ...).
  private var isDefinitions = false
  /// RabbitMQ's vhost-limits runtime parameters, by vhost (checked against the declared vhosts at the end).
  private var limitParameters: [(vhost: String, node: Node)] = []

  /// Parses `text` (named `file` in messages); exchange types are checked against `registry`.
  public static func load(text: String, file: String, registry: ExchangeRegistry) throws(ConfigProblems)
    -> WarrenConfiguration
  {
    var loader = ConfigLoader(file: file, registry: registry)
    let configuration = loader.parse(text)
    if loader.problems.isEmpty, let configuration { return configuration }
    throw ConfigProblems(problems: loader.problems)
  }

  /// Reads and parses a file.
  public static func load(path: String, registry: ExchangeRegistry) throws(ConfigProblems) -> WarrenConfiguration {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
      throw ConfigProblems(problems: [ConfigProblem(file: path, line: 1, column: 1, message: "cannot read the file")])
    }
    return try Self.load(text: text, file: path, registry: registry)
  }

  /// A problem with the value of a `server:` key found after loading (a certificate that cannot be read, say),
  /// placed at that key's value in the file; at the top of the file when the key is not there.
  public static func problem(atServerKey key: String, in path: String, message: String) -> ConfigProblem {
    let text = FileManager.default.contents(atPath: path).flatMap { String(data: $0, encoding: .utf8) } ?? ""
    let root = try? Yams.compose(yaml: text)
    let value = root?.mapping?["server"]?.mapping?[key]
    return ConfigProblem(file: path, line: value?.mark?.line ?? 1, column: value?.mark?.column ?? 1, message: message)
  }

  private mutating func problem(_ node: Node?, _ message: String) {
    let mark = node?.mark
    self.problems.append(
      ConfigProblem(file: self.file, line: mark?.line ?? 1, column: mark?.column ?? 1, message: message))
  }

  private mutating func parse(_ text: String) -> WarrenConfiguration? {
    let root: Node?
    do {
      root = try Yams.compose(yaml: text)
    } catch let error as YamlError {
      self.problems.append(Self.problem(from: error, file: self.file))
      return nil
    } catch {
      self.problems.append(ConfigProblem(file: self.file, line: 1, column: 1, message: "\(error)"))
      return nil
    }
    var configuration = WarrenConfiguration()
    guard let root else { return configuration }  // an empty file: the defaults
    guard let mapping = self.mapping(root, "the top level") else { return nil }
    // A RabbitMQ definitions.json (JSON is YAML) has the same sections and a few of its own.
    let rabbitKeys = [
      "rabbit_version", "rabbitmq_version", "product_name", "product_version", "topic_permissions", "parameters",
      "global_parameters",
    ]
    self.isDefinitions = mapping.keys.contains { rabbitKeys.contains($0.string ?? "") }
    for (key, value) in self.entries(
      mapping,
      allowed: [
        "server", "vhosts", "users", "permissions", "policies", "operator_policies", "exchanges", "queues", "bindings",
      ]
        + (self.isDefinitions ? rabbitKeys : []),
      in: "the top level")
    {
      switch key {
      case "server": self.parseServer(value, into: &configuration.server)
      case "vhosts": configuration.vhosts = self.parseVhosts(value, limits: &configuration.vhostLimits)
      case "users": configuration.users = self.parseUsers(value, limits: &configuration.userLimits)
      case "permissions": configuration.permissions = self.parsePermissions(value)
      case "policies": configuration.policies = self.parsePolicies(value, "policies")
      case "operator_policies": configuration.operatorPolicies = self.parsePolicies(value, "operator_policies")
      case "exchanges": configuration.exchanges = self.parseExchanges(value)
      case "queues": configuration.queues = self.parseQueues(value)
      case "bindings": configuration.bindings = self.parseBindings(value)
      case "parameters": self.parseParameters(value, limits: &configuration.vhostLimits)
      default: break
      }
    }
    self.crossCheck(configuration, root: root)
    return configuration
  }

  // MARK: Sections

  private mutating func parseServer(_ node: Node, into server: inout ServerSettings) {
    guard let mapping = self.mapping(node, "server") else { return }
    for (key, value) in self.entries(mapping, allowed: ServerSetting.all.map(\.key), in: "server") {
      guard let setting = ServerSetting.named(key) else { continue }
      guard let scalar = value.scalar else {
        self.problem(value, "\(key) must be a single value")
        continue
      }
      if let problem = setting.set(scalar.string, in: &server) { self.problem(value, problem) }
    }
  }

  private mutating func parseVhosts(_ node: Node, limits: inout [String: VirtualHostLimits]) -> [String] {
    guard let sequence = self.sequence(node, "vhosts") else { return ["/"] }
    var names: [String] = []
    for item in sequence {
      let name: String?
      if item.scalar != nil {
        name = self.string(item, "vhost")
      } else if let mapping = self.mapping(item, "a vhost") {
        var found: String?
        var values: [String: Int] = [:]
        for (key, value) in self.entries(
          mapping, allowed: ["name", "metadata", "limits", "description", "tags", "default_queue_type"], in: "a vhost")
        {
          if key == "name" { found = self.string(value, "name") }
          if key == "limits" { values = self.parseLimits(value, allowed: ["max-connections", "max-queues"]) }
        }
        if found == nil { self.problem(item, "a vhost needs a name") }
        name = found
        if let found, !values.isEmpty {
          limits[found, default: VirtualHostLimits()].merge(values)
        }
      } else {
        name = nil
      }
      guard let name else { continue }
      if names.contains(name) { self.problem(item, "duplicate vhost '\(name)'") }
      names.append(name)
    }
    return names
  }

  /// RabbitMQ's runtime parameters: its definitions keep vhost limits there (component `vhost-limits`, name
  /// `limits`), not on the vhost; other components (federation, shovels) are not Warren's and are left alone.
  private mutating func parseParameters(_ node: Node, limits: inout [String: VirtualHostLimits]) {
    guard let sequence = self.sequence(node, "parameters") else { return }
    for item in sequence {
      guard let mapping = self.mapping(item, "a parameter") else { continue }
      let fields = self.entries(mapping, allowed: ["vhost", "component", "name", "value"], in: "a parameter")
      guard fields.contains(where: { $0.0 == "component" && $0.1.string == "vhost-limits" }) else { continue }
      guard let vhostNode = fields.first(where: { $0.0 == "vhost" })?.1, let vhost = self.string(vhostNode, "vhost")
      else {
        self.problem(item, "a vhost-limits parameter needs a vhost")
        continue
      }
      guard let value = fields.first(where: { $0.0 == "value" })?.1 else {
        self.problem(item, "a vhost-limits parameter needs a value")
        continue
      }
      let values = self.parseLimits(value, allowed: ["max-connections", "max-queues"])
      if !values.isEmpty { limits[vhost, default: VirtualHostLimits()].merge(values) }
      self.limitParameters.append((vhost, item))
    }
  }

  /// A `limits` mapping: each allowed key an integer (-1 for no limit).
  private mutating func parseLimits(_ node: Node, allowed: [String]) -> [String: Int] {
    if let sequence = node.sequence, sequence.isEmpty { return [:] }  // RabbitMQ writes no limits as []
    guard let mapping = self.mapping(node, "limits") else { return [:] }
    var values: [String: Int] = [:]
    for (key, value) in self.entries(mapping, allowed: allowed, in: "limits") {
      if let number = self.integer(value, key, -1...Int(Int32.max)) { values[key] = number }
    }
    return values
  }

  private mutating func parseUsers(_ node: Node, limits: inout [String: UserLimits]) -> [UserDefinition] {
    guard let sequence = self.sequence(node, "users") else { return [] }
    var users: [UserDefinition] = []
    for item in sequence {
      guard let mapping = self.mapping(item, "a user") else { continue }
      var name: String?
      var password: String?
      var hash: String?
      var tags: [String] = []
      var values: [String: Int] = [:]
      for (key, value) in self.entries(
        mapping, allowed: ["name", "password", "password_hash", "hashing_algorithm", "tags", "limits"], in: "a user")
      {
        switch key {
        case "name": name = self.string(value, key)
        case "password": password = self.string(value, key).map(Self.expandEnvironment)
        case "password_hash":
          hash = self.string(value, key).map(Self.expandEnvironment)
          if let hash, !User.isValidHash(hash) {
            self.problem(value, "password_hash is not a RabbitMQ SHA-256 password hash (base64 of 36 bytes)")
          }
        case "hashing_algorithm":
          if let algorithm = self.string(value, key), algorithm != "rabbit_password_hashing_sha256" {
            self.problem(value, "hashing_algorithm '\(algorithm)' is not supported (rabbit_password_hashing_sha256 is)")
          }
        case "tags":
          // RabbitMQ writes "administrator,monitoring" (3.x) or a list (newer).
          if let text = value.scalar?.string {
            tags = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
          } else if let list = value.sequence {
            tags = list.compactMap { $0.scalar?.string }
          } else {
            self.problem(value, "tags must be a comma-separated string or a list")
          }
        case "limits": values = self.parseLimits(value, allowed: ["max-connections", "max-channels"])
        default: break
        }
      }
      guard let name, password != nil || hash != nil else {
        self.problem(item, "a user needs a name and a password or password_hash")
        continue
      }
      if users.contains(where: { $0.name == name }) { self.problem(item, "duplicate user '\(name)'") }
      if !values.isEmpty {
        limits[name] = UserLimits(maxConnections: values["max-connections"], maxChannels: values["max-channels"])
      }
      users.append(UserDefinition(name: name, password: hash == nil ? password : nil, passwordHash: hash, tags: tags))
    }
    return users
  }

  private mutating func parsePermissions(_ node: Node) -> [PermissionDefinition] {
    guard let sequence = self.sequence(node, "permissions") else { return [] }
    var grants: [PermissionDefinition] = []
    for item in sequence {
      guard let mapping = self.mapping(item, "a permission") else { continue }
      var grant = PermissionDefinition(user: "", vhost: "/", permission: Permission())
      for (key, value) in self.entries(
        mapping, allowed: ["user", "vhost", "configure", "write", "read"], in: "a permission")
      {
        switch key {
        case "user": grant.user = self.string(value, key) ?? ""
        case "vhost": grant.vhost = self.string(value, key) ?? "/"
        case "configure", "write", "read":
          guard let pattern = self.string(value, key) else { continue }
          if (try? Regex(pattern)) == nil {
            self.problem(value, "\(key) is not a valid regular expression: '\(pattern)'")
          }
          if key == "configure" { grant.permission.configure = pattern }
          if key == "write" { grant.permission.write = pattern }
          if key == "read" { grant.permission.read = pattern }
        default: break
        }
      }
      if grant.user.isEmpty { self.problem(item, "a permission needs a user") }
      if grants.contains(where: { $0.user == grant.user && $0.vhost == grant.vhost }) {
        self.problem(item, "duplicate permissions for user '\(grant.user)' in vhost '\(grant.vhost)'")
      }
      grants.append(grant)
    }
    return grants
  }

  private mutating func parsePolicies(_ node: Node, _ section: String) -> [PolicyDefinition] {
    guard let sequence = self.sequence(node, section) else { return [] }
    var policies: [PolicyDefinition] = []
    for item in sequence {
      guard let mapping = self.mapping(item, "a policy") else { continue }
      var policy = PolicyDefinition(name: "", vhost: "/", pattern: "", applyTo: "all", priority: 0, definition: [:])
      for (key, value) in self.entries(
        mapping, allowed: ["name", "vhost", "pattern", "apply_to", "apply-to", "priority", "definition"],
        in: "a policy")
      {
        switch key {
        case "name": policy.name = self.string(value, key) ?? ""
        case "vhost": policy.vhost = self.string(value, key) ?? "/"
        case "pattern":
          policy.pattern = self.string(value, key) ?? ""
          if (try? Regex(policy.pattern)) == nil {
            self.problem(value, "pattern is not a valid regular expression: '\(policy.pattern)'")
          }
        case "apply_to", "apply-to":
          let applyTo = self.string(value, key) ?? "all"
          if ["all", "queues", "exchanges"].contains(applyTo) {
            policy.applyTo = applyTo
          } else {
            self.problem(value, "apply_to must be all, queues or exchanges, not '\(applyTo)'")
          }
        case "priority": policy.priority = self.integer(value, key, -1_000_000...1_000_000) ?? 0
        case "definition":
          policy.definition = self.table(value, key)
          if let problem = policy.definitionProblem(operator: section == "operator_policies") {
            self.problem(value, problem)
          }
        default: break
        }
      }
      if policy.name.isEmpty || policy.pattern.isEmpty { self.problem(item, "a policy needs a name and a pattern") }
      policies.append(policy)
    }
    return policies
  }

  private mutating func parseExchanges(_ node: Node) -> [ExchangeDefinition] {
    guard let sequence = self.sequence(node, "exchanges") else { return [] }
    var exchanges: [ExchangeDefinition] = []
    for item in sequence {
      guard let mapping = self.mapping(item, "an exchange") else { continue }
      var definition = ExchangeDefinition(
        vhost: "/", name: "", type: "", durable: true, autoDelete: false, isInternal: false, arguments: [:])
      var typeNode: Node?
      var argumentsNode: Node?
      let allowed = ["name", "vhost", "type", "durable", "auto_delete", "internal", "arguments"]
      for (key, value) in self.entries(mapping, allowed: allowed, in: "an exchange") {
        switch key {
        case "name": definition.name = self.string(value, key) ?? ""
        case "vhost": definition.vhost = self.string(value, key) ?? "/"
        case "type":
          definition.type = self.string(value, key) ?? ""
          typeNode = value
        case "durable": definition.durable = self.boolean(value, key) ?? true
        case "auto_delete": definition.autoDelete = self.boolean(value, key) ?? false
        case "internal": definition.isInternal = self.boolean(value, key) ?? false
        case "arguments":
          definition.arguments = self.table(value, key)
          argumentsNode = value
        default: break
        }
      }
      if definition.name.isEmpty { self.problem(item, "an exchange needs a name") }
      if definition.type.isEmpty {
        self.problem(item, "exchange '\(definition.name)' needs a type")
      } else if let type = self.registry.type(named: definition.type) {
        do {
          try type.validate(exchangeArguments: definition.arguments)
        } catch {
          self.problem(argumentsNode ?? item, "exchange '\(definition.name)': \(error.replyText)")
        }
      } else {
        self.problem(
          typeNode, "unknown exchange type '\(definition.type)' (known: \(self.registry.names.joined(separator: ", ")))"
        )
      }
      if exchanges.contains(where: { $0.name == definition.name && $0.vhost == definition.vhost }) {
        self.problem(item, "duplicate exchange '\(definition.name)' in vhost '\(definition.vhost)'")
      }
      exchanges.append(definition)
    }
    return exchanges
  }

  private mutating func parseQueues(_ node: Node) -> [QueueDefinition] {
    guard let sequence = self.sequence(node, "queues") else { return [] }
    var queues: [QueueDefinition] = []
    for item in sequence {
      guard let mapping = self.mapping(item, "a queue") else { continue }
      var definition = QueueDefinition(vhost: "/", name: "", durable: true, autoDelete: false, arguments: [:])
      var argumentsNode: Node?
      for (key, value) in self.entries(
        mapping, allowed: ["name", "vhost", "durable", "auto_delete", "arguments", "type"], in: "a queue")
      {
        switch key {
        case "name": definition.name = self.string(value, key) ?? ""
        case "vhost": definition.vhost = self.string(value, key) ?? "/"
        case "durable": definition.durable = self.boolean(value, key) ?? true
        case "auto_delete": definition.autoDelete = self.boolean(value, key) ?? false
        case "arguments":
          definition.arguments = self.table(value, key)
          argumentsNode = value
        case "type":
          if let type = self.string(value, key), type != "classic" {
            self.problem(value, "queue type '\(type)' is not supported (classic is)")
          }
        default: break
        }
      }
      if definition.name.isEmpty { self.problem(item, "a queue needs a name") }
      do {
        try QueueArguments.validate(definition.arguments, queue: definition.name, vhost: definition.vhost)
      } catch {
        self.problem(argumentsNode ?? item, error.replyText)
      }
      if queues.contains(where: { $0.name == definition.name && $0.vhost == definition.vhost }) {
        self.problem(item, "duplicate queue '\(definition.name)' in vhost '\(definition.vhost)'")
      }
      queues.append(definition)
    }
    return queues
  }

  private mutating func parseBindings(_ node: Node) -> [BindingDefinition] {
    guard let sequence = self.sequence(node, "bindings") else { return [] }
    var bindings: [BindingDefinition] = []
    for item in sequence {
      guard let mapping = self.mapping(item, "a binding") else { continue }
      var definition = BindingDefinition(
        vhost: "/", source: "", destination: "", destinationKind: .queue, routingKey: "", arguments: [:])
      for (key, value) in self.entries(
        mapping, allowed: ["vhost", "source", "destination", "destination_type", "routing_key", "arguments"],
        in: "a binding")
      {
        switch key {
        case "vhost": definition.vhost = self.string(value, key) ?? "/"
        case "source": definition.source = self.string(value, key) ?? ""
        case "destination": definition.destination = self.string(value, key) ?? ""
        case "destination_type":
          if let kind = self.string(value, key) {
            if let parsed = BindingDefinition.DestinationKind(rawValue: kind) {
              definition.destinationKind = parsed
            } else {
              self.problem(value, "destination_type must be queue or exchange, not '\(kind)'")
            }
          }
        case "routing_key": definition.routingKey = self.string(value, key) ?? ""
        case "arguments": definition.arguments = self.table(value, key)
        default: break
        }
      }
      if definition.source.isEmpty || definition.destination.isEmpty {
        self.problem(item, "a binding needs a source and a destination")
      }
      bindings.append(definition)
    }
    return bindings
  }

  /// Bindings must name declared (or predeclared) entities; permissions, declared users and vhosts.
  private mutating func crossCheck(_ configuration: WarrenConfiguration, root: Node) {
    for (vhost, item) in self.limitParameters where !configuration.vhosts.contains(vhost) {
      self.problem(item, "vhost-limits for an undeclared vhost '\(vhost)'")
    }
    if let items = root.mapping?["permissions"]?.sequence.map(Array.init) {
      for (grant, item) in zip(configuration.permissions, items) {
        if grant.user != "guest" && !configuration.users.contains(where: { $0.name == grant.user }) {
          self.problem(item, "permissions for an undeclared user '\(grant.user)'")
        }
        if !configuration.vhosts.contains(grant.vhost) {
          self.problem(item, "permissions in an undeclared vhost '\(grant.vhost)'")
        }
      }
    }
    guard let items = root.mapping?["bindings"]?.sequence.map(Array.init) else { return }
    let predeclared = Set(VirtualHost(name: "/", registry: self.registry).exchanges.keys)
    for (binding, item) in zip(configuration.bindings, items) {
      func exchangeKnown(_ name: String) -> Bool {
        predeclared.contains(name)
          || configuration.exchanges.contains { $0.name == name && $0.vhost == binding.vhost }
      }
      if !binding.source.isEmpty && !exchangeKnown(binding.source) {
        self.problem(item, "binding source: no exchange '\(binding.source)' in vhost '\(binding.vhost)'")
      }
      switch binding.destinationKind {
      case .queue:
        if !binding.destination.isEmpty
          && !configuration.queues.contains(where: { $0.name == binding.destination && $0.vhost == binding.vhost })
        {
          self.problem(item, "binding destination: no queue '\(binding.destination)' in vhost '\(binding.vhost)'")
        }
      case .exchange:
        if !binding.destination.isEmpty && !exchangeKnown(binding.destination) {
          self.problem(
            item, "binding destination: no exchange '\(binding.destination)' in vhost '\(binding.vhost)'")
        }
      }
    }
  }

  // MARK: Values

  private mutating func mapping(_ node: Node, _ what: String) -> Node.Mapping? {
    if let mapping = node.mapping { return mapping }
    self.problem(node, "\(what) must be a mapping (key: value)")
    return nil
  }

  private mutating func sequence(_ node: Node, _ what: String) -> Node.Sequence? {
    if let sequence = node.sequence { return sequence }
    self.problem(node, "\(what) must be a list")
    return nil
  }

  /// The entries of a mapping whose keys are allowed; unknown and repeated keys are problems.
  private mutating func entries(_ mapping: Node.Mapping, allowed: [String], in what: String) -> [(String, Node)] {
    var result: [(String, Node)] = []
    for (keyNode, value) in mapping {
      guard let key = keyNode.string else {
        self.problem(keyNode, "keys in \(what) must be strings")
        continue
      }
      if !allowed.contains(key) {
        self.problem(keyNode, "unknown key '\(key)' in \(what) (expected one of: \(allowed.joined(separator: ", ")))")
        continue
      }
      if result.contains(where: { $0.0 == key }) {
        self.problem(keyNode, "duplicate key '\(key)' in \(what)")
        continue
      }
      result.append((key, value))
    }
    return result
  }

  private mutating func string(_ node: Node, _ key: String) -> String? {
    if let scalar = node.scalar { return scalar.string }
    self.problem(node, "\(key) must be a string")
    return nil
  }

  private func number(_ node: Node, _ key: String) -> Double? {
    node.int.map(Double.init) ?? node.float
  }

  private mutating func integer(_ node: Node, _ key: String, _ range: ClosedRange<Int>) -> Int? {
    guard let value = node.int else {
      self.problem(node, "\(key) must be an integer")
      return nil
    }
    guard range.contains(value) else {
      self.problem(node, "\(key) must be between \(range.lowerBound) and \(range.upperBound), not \(value)")
      return nil
    }
    return value
  }

  private mutating func boolean(_ node: Node, _ key: String) -> Bool? {
    if let value = node.bool { return value }
    self.problem(node, "\(key) must be true or false")
    return nil
  }

  /// A mapping of AMQP arguments: strings, integers, booleans, floats, lists and nested mappings.
  private mutating func table(_ node: Node, _ key: String, depth: Int = 1) -> FieldTable {
    guard let mapping = self.mapping(node, key) else { return [:] }
    guard depth <= FieldTable.maxNestingDepth else {
      self.problem(node, "\(key): tables and lists nested deeper than \(FieldTable.maxNestingDepth) levels")
      return [:]
    }
    var table = FieldTable()
    for (keyNode, value) in mapping {
      guard let name = keyNode.string else { continue }
      if let converted = self.fieldValue(value, name, depth: depth + 1) { table[name] = converted }
    }
    return table
  }

  private mutating func fieldValue(_ node: Node, _ key: String, depth: Int) -> FieldValue? {
    switch node {
    case .scalar(let scalar):
      if scalar.style == .plain {
        if let int = node.int { return .int64(Int64(int)) }
        if let bool = node.bool { return .bool(bool) }
        if let double = node.float { return .double(double) }
      }
      return .longString(scalar.string)
    case .sequence(let sequence):
      guard depth <= FieldTable.maxNestingDepth else {
        self.problem(node, "\(key): tables and lists nested deeper than \(FieldTable.maxNestingDepth) levels")
        return nil
      }
      return .array(sequence.compactMap { self.fieldValue($0, key, depth: depth + 1) })
    case .mapping:
      return .table(self.table(node, key, depth: depth))
    case .alias:
      self.problem(node, "\(key): aliases are not supported")
      return nil
    }
  }

  /// `${NAME}` in a value is replaced by the environment variable NAME (for container secrets).
  static func expandEnvironment(_ value: String) -> String {
    var result = ""
    var rest = Substring(value)
    while let start = rest.range(of: "${"), let end = rest[start.upperBound...].firstIndex(of: "}") {
      result += rest[..<start.lowerBound]
      let name = String(rest[start.upperBound..<end])
      result += getenv(name).map { String(cString: $0) } ?? ""
      rest = rest[rest.index(after: end)...]
    }
    return result + rest
  }

  static func problem(from error: YamlError, file: String) -> ConfigProblem {
    switch error {
    case .duplicatedKeysInMapping(let duplicates, let context):
      let keys = duplicates.map { "'\($0)'" }.joined(separator: ", ")
      return ConfigProblem(
        file: file, line: context.mark.line, column: context.mark.column, message: "duplicate key \(keys) in a mapping")
    case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
      .composer(let context, let problem, let mark, _):
      let text = [context?.text, problem].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ", ")
      return ConfigProblem(file: file, line: mark.line, column: mark.column, message: "not valid YAML: \(text)")
    default:
      return ConfigProblem(file: file, line: 1, column: 1, message: "not valid YAML: \(error)")
    }
  }
}
