import AMQPProtocol
import Foundation
import NIOCore
import NIOHTTP1
import WarrenConfig
import WarrenCore
import WarrenHTTP
import WarrenServer

/// Vhosts, users, permissions and policies.
extension ManagementAPI {
  func vhosts(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    if path.count == 1 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      let visible = try await self.visibleVhosts(caller)
      let rows = try await self.amqp.withBroker { broker in
        broker.vhosts.values.filter { visible.contains($0.name) }.map { vhost -> (String, Int, Int) in
          let queues = vhost.queues.values.filter { !$0.isHolding }
          return (vhost.name, queues.reduce(0) { $0 + $1.messageCount }, queues.reduce(0) { $0 + $1.unackedCount })
        }
      }
      return try Self.listing(rows.map { Self.vhostJSON(name: $0.0, ready: $0.1, unacked: $0.2) }, request)
    }
    let name = path[1]
    if path.count == 3, path[2] == "connections", request.method == .GET {
      try await self.requireVhost(name, caller)
      let all = try await self.amqp.inspect { $0.connectionDetails() }
      return try Self.listing(
        all.filter { $0.vhost == name && self.mayView($0.user, caller) }.map(Self.connectionJSON), request)
    }
    if path.count == 3, path[2] == "channels", request.method == .GET {
      try await self.requireVhost(name, caller)
      let all = try await self.amqp.inspect { $0.channelDetails() }
      return try Self.listing(
        all.filter { $0.vhost == name && self.mayView($0.user, caller) }.map(Self.channelJSON), request)
    }
    guard path.count == 2 else { throw ManagementError.notFound }
    switch request.method {
    case .GET:
      try await self.requireVhost(name, caller)
      let row = try await self.amqp.withBroker { broker -> (Int, Int)? in
        guard let vhost = broker.vhosts[name] else { return nil }
        let queues = vhost.queues.values.filter { !$0.isHolding }
        return (queues.reduce(0) { $0 + $1.messageCount }, queues.reduce(0) { $0 + $1.unackedCount })
      }
      guard let row else { throw ManagementError.notFound }
      return Self.json(Self.vhostJSON(name: name, ready: row.0, unacked: row.1))
    case .PUT:
      try caller.requireAdministrator()
      _ = try request.jsonObject()
      try Self.checkName(name, "vhost")
      let user = caller.user.name
      let created = try await self.amqp.withBroker { broker -> Bool in
        if broker.vhosts[name] != nil { return false }
        broker.addVirtualHost(name)
        // As RabbitMQ: the creating user gets full permissions in the new vhost.
        if broker.permissions[user]?[name] == nil { broker.permissions[user, default: [:]][name] = Permission() }
        return true
      }
      await self.saveDefinitions()
      return created ? Self.created : Self.noContent
    case .DELETE:
      try caller.requireAdministrator()
      let deleted = try await self.amqp.inspect { $0.deleteVirtualHost(name) }
      guard deleted else { throw ManagementError.notFound }
      await self.saveDefinitions()
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  static func vhostJSON(name: String, ready: Int, unacked: Int) -> JSONValue {
    .object([
      ("name", .string(name)), ("description", name == "/" ? "Default virtual host" : ""), ("tags", []),
      ("default_queue_type", "undefined"), ("metadata", .object([("description", ""), ("tags", [])])),
      ("tracing", false), ("messages", .int(ready + unacked)), ("messages_details", .object([("rate", 0.0)])),
      ("messages_ready", .int(ready)), ("messages_ready_details", .object([("rate", 0.0)])),
      ("messages_unacknowledged", .int(unacked)), ("messages_unacknowledged_details", .object([("rate", 0.0)])),
    ])
  }

  /// Queue and exchange names travel in AMQP short strings: at most 255 bytes, as RabbitMQ's API checks.
  static func checkName(_ name: String, _ kind: String) throws(ManagementError) {
    guard kind == "queue" || kind == "exchange" else { return }
    if name.utf8.count > 255 {
      throw .badRequest("\(kind) should be less than 255 bytes, actually was \(name.utf8.count)")
    }
  }

  func users(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    try caller.requireAdministrator()
    if path.count == 1 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      let users = try await self.amqp.withBroker { Array($0.users.values) }
      return try Self.listing(users.map(Self.userJSON), request)
    }
    if path.count == 2, path[1] == "without-permissions", request.method == .GET {
      let users = try await self.amqp.withBroker { broker in
        broker.users.values.filter { (broker.permissions[$0.name] ?? [:]).isEmpty }
      }
      return try Self.listing(users.map(Self.userJSON), request)
    }
    let name = path[1]
    if path.count == 3, path[2] == "permissions", request.method == .GET {
      let rows = try await self.amqp.withBroker { broker -> [(String, Permission)]? in
        guard broker.users[name] != nil else { return nil }
        return (broker.permissions[name] ?? [:]).map { ($0.key, $0.value) }
      }
      guard let rows else { throw ManagementError.notFound }
      return try Self.listing(
        rows.map { Self.permissionJSON(user: name, vhost: $0.0, $0.1) }, request, defaultSort: "vhost")
    }
    guard path.count == 2 else { throw ManagementError.notFound }
    switch request.method {
    case .GET:
      guard let user = try await self.amqp.withBroker({ $0.users[name] }) else { throw ManagementError.notFound }
      return Self.json(Self.userJSON(user))
    case .PUT:
      try Self.checkName(name, "user")
      let body = try request.jsonObject()
      let tags = Self.tags(body["tags"])
      let hash: String?
      if let password = body["password"]?.stringValue {
        hash = User.hash(password: password)
      } else if let given = body["password_hash"]?.stringValue {
        if let algorithm = body["hashing_algorithm"]?.stringValue, algorithm != "rabbit_password_hashing_sha256" {
          throw ManagementError.badRequest("unsupported hashing algorithm '\(algorithm)'")
        }
        guard given.isEmpty || User.isValidHash(given) else {
          throw ManagementError.badRequest("invalid password_hash")
        }
        hash = given
      } else {
        hash = nil
      }
      let created = try await self.amqp.withBroker { broker -> Bool? in
        if var existing = broker.users[name] {
          existing.tags = tags
          if let hash { existing.passwordHash = hash }
          broker.users[name] = existing
          return false
        }
        guard let hash else { return nil }
        broker.users[name] = User(name: name, passwordHash: hash, tags: tags)
        return true
      }
      guard let created else {
        throw ManagementError.badRequest("missing password or password_hash for a new user")
      }
      await self.saveDefinitions()
      return created ? Self.created : Self.noContent
    case .DELETE:
      let existed = try await self.amqp.withBroker { broker -> Bool in
        guard broker.users.removeValue(forKey: name) != nil else { return false }
        broker.permissions[name] = nil
        return true
      }
      guard existed else { throw ManagementError.notFound }
      await self.saveDefinitions()
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  /// Tags as RabbitMQ takes them: a comma-separated string or an array.
  static func tags(_ value: JSONValue?) -> [String] {
    switch value {
    case .string(let text)?:
      return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    case .array(let items)?:
      return items.compactMap(\.stringValue)
    default:
      return []
    }
  }

  static func userJSON(_ user: User) -> JSONValue {
    .object([
      ("name", .string(user.name)), ("password_hash", .string(user.passwordHash)),
      ("hashing_algorithm", "rabbit_password_hashing_sha256"), ("tags", .array(user.tags.map { .string($0) })),
      ("limits", .object([])),
    ])
  }

  static func permissionJSON(user: String, vhost: String, _ permission: Permission) -> JSONValue {
    .object([
      ("user", .string(user)), ("vhost", .string(vhost)), ("configure", .string(permission.configure)),
      ("write", .string(permission.write)), ("read", .string(permission.read)),
    ])
  }

  func permissions(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    try caller.requireAdministrator()
    if path.count == 1 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      let rows = try await self.amqp.withBroker { broker in
        broker.permissions.flatMap { user, grants in grants.map { (user, $0.key, $0.value) } }
      }
      let items = rows.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map { Self.permissionJSON(user: $0.0, vhost: $0.1, $0.2) }
      return try Self.listing(items, request, defaultSort: nil)
    }
    guard path.count == 3 else { throw ManagementError.notFound }
    let (vhost, user) = (path[1], path[2])
    switch request.method {
    case .GET:
      let permission = try await self.amqp.withBroker { $0.permissions[user]?[vhost] }
      guard let permission else { throw ManagementError.notFound }
      return Self.json(Self.permissionJSON(user: user, vhost: vhost, permission))
    case .PUT:
      let body = try request.jsonObject()
      var permission = Permission(configure: "", write: "", read: "")
      for key in ["configure", "write", "read"] {
        guard let pattern = body[key]?.stringValue else { throw ManagementError.badRequest("missing \(key)") }
        if !pattern.isEmpty, (try? Regex(pattern)) == nil {
          throw ManagementError.badRequest("invalid regular expression '\(pattern)' for \(key)")
        }
        switch key {
        case "configure": permission.configure = pattern
        case "write": permission.write = pattern
        default: permission.read = pattern
        }
      }
      let granted = permission
      let outcome = try await self.amqp.withBroker { broker -> Bool? in
        guard broker.vhosts[vhost] != nil, broker.users[user] != nil else { return nil }
        let created = broker.permissions[user]?[vhost] == nil
        broker.permissions[user, default: [:]][vhost] = granted
        return created
      }
      guard let created = outcome else { throw ManagementError.badRequest("no such vhost or user") }
      await self.saveDefinitions()
      return created ? Self.created : Self.noContent
    case .DELETE:
      let existed = try await self.amqp.withBroker { broker -> Bool in
        broker.permissions[user]?.removeValue(forKey: vhost) != nil
      }
      guard existed else { throw ManagementError.notFound }
      await self.saveDefinitions()
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  func policies(_ request: ManagementRequest, _ caller: Caller, _ path: [String], operator isOperator: Bool)
    async throws -> HTTPResponse
  {
    if isOperator {
      try caller.requireAdministrator()
    } else if !caller.isPolicymaker {
      // management users see the policies of their vhosts, as RabbitMQ; changing them needs policymaker.
      if request.method != .GET { throw Caller.notPolicymaker }
    }
    let visible = try await self.visibleVhosts(caller)
    if path.count <= 2 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      if path.count == 2 { try await self.requireVhost(path[1], caller) }
      let only = path.count == 2 ? path[1] : nil
      let rows = try await self.amqp.withBroker { broker -> [PolicyDefinition] in
        broker.vhosts.values.filter { visible.contains($0.name) && (only == nil || $0.name == only) }
          .flatMap { vhost in
            (isOperator ? vhost.operatorPolicies : vhost.policies).map { PolicyDefinition(vhost: vhost.name, $0) }
          }
      }
      return try Self.listing(rows.map(Self.policyJSON), request)
    }
    guard path.count == 3 else { throw ManagementError.notFound }
    let (vhostName, name) = (path[1], path[2])
    try await self.requireVhost(vhostName, caller)
    switch request.method {
    case .GET:
      let policy = try await self.amqp.withBroker { broker in
        (isOperator ? broker.vhosts[vhostName]?.operatorPolicies : broker.vhosts[vhostName]?.policies)?
          .first { $0.name == name }.map { PolicyDefinition(vhost: vhostName, $0) }
      }
      guard let policy else { throw ManagementError.notFound }
      return Self.json(Self.policyJSON(policy))
    case .PUT:
      try Self.checkName(name, "policy")
      let body = try request.jsonObject()
      guard let pattern = body["pattern"]?.stringValue else { throw ManagementError.badRequest("missing pattern") }
      if (try? Regex(pattern)) == nil { throw ManagementError.badRequest("invalid regular expression '\(pattern)'") }
      guard let definitionJSON = body["definition"], case .object = definitionJSON else {
        throw ManagementError.badRequest("missing definition")
      }
      let applyText = body["apply-to"]?.stringValue ?? "all"
      guard Policy.ApplyTo(rawValue: applyText) != nil else {
        throw ManagementError.badRequest("invalid apply-to '\(applyText)'")
      }
      let priority = body["priority"].flatMap(\.intValue) ?? 0
      let definition = PolicyDefinition(
        name: name, vhost: vhostName, pattern: pattern, applyTo: applyText, priority: Int(priority),
        definition: try definitionJSON.fieldTable())
      if let problem = definition.definitionProblem(operator: isOperator) { throw ManagementError.badRequest(problem) }
      let created = try await self.amqp.withBroker { broker -> Bool in
        let policy = definition.policy
        guard let vhost = broker.vhosts[vhostName] else { return false }
        var policies = vhost.policies
        var operatorPolicies = vhost.operatorPolicies
        var list = isOperator ? operatorPolicies : policies
        let created = !list.contains { $0.name == name }
        list.removeAll { $0.name == name }
        list.append(policy)
        if isOperator { operatorPolicies = list } else { policies = list }
        vhost.setPolicies(policies, operatorPolicies: operatorPolicies)
        return created
      }
      await self.saveDefinitions()
      return created ? Self.created : Self.noContent
    case .DELETE:
      let existed = try await self.amqp.withBroker { broker -> Bool in
        guard let vhost = broker.vhosts[vhostName] else { return false }
        var policies = vhost.policies
        var operatorPolicies = vhost.operatorPolicies
        let before = policies.count + operatorPolicies.count
        if isOperator { operatorPolicies.removeAll { $0.name == name } } else { policies.removeAll { $0.name == name } }
        guard policies.count + operatorPolicies.count < before else { return false }
        vhost.setPolicies(policies, operatorPolicies: operatorPolicies)
        return true
      }
      guard existed else { throw ManagementError.notFound }
      await self.saveDefinitions()
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  static func policyJSON(_ policy: PolicyDefinition) -> JSONValue {
    .object([
      ("vhost", .string(policy.vhost)), ("name", .string(policy.name)), ("pattern", .string(policy.pattern)),
      ("apply-to", .string(policy.applyTo)), ("definition", JSONValue(policy.definition)),
      ("priority", .int(policy.priority)),
    ])
  }
}
