import AMQPProtocol
import Foundation
import NIOCore
import NIOHTTP1
import WarrenConfig
import WarrenCore
import WarrenHTTP
import WarrenServer

/// Exchanges, queues, bindings, connections, channels and consumers.
extension ManagementAPI {
  /// Management users see their own connections and channels; monitors and administrators see everyone's.
  func mayView(_ user: String, _ caller: Caller) -> Bool { caller.isMonitor || user == caller.user.name }

  /// One change on the broker's loop: `body` runs there (one hop), then the store commits and deliveries flush as
  /// after a socket read; a refusal comes back as RabbitMQ's error.
  @discardableResult
  func change<T: Sendable>(_ body: @escaping @Sendable (BrokerInspection) throws(BrokerError) -> T) async throws -> T {
    let result = try await self.amqp.inspect { inspection -> Result<T, BrokerError> in
      do throws(BrokerError) {
        let value = try body(inspection)
        inspection.commit()
        return .success(value)
      } catch {
        inspection.commit()
        return .failure(error)
      }
    }
    return try result.get()
  }

  /// Throws RabbitMQ's 401 unless the caller has this permission on the resource (as the AMQP operation would).
  private func authorize(
    _ access: Permission.Access, _ kind: String, _ name: String, vhost: String, _ caller: Caller
  ) async throws {
    let user = caller.user.name
    let refused = try await self.amqp.withBroker { broker -> String? in
      do throws(BrokerError) {
        try broker.authorize(access, kind, name, vhost: vhost, user: user)
        return nil
      } catch {
        return error.replyText
      }
    }
    if let refused { throw ManagementError(.unauthorized, "not_authorised", refused) }
  }

  // MARK: Exchanges

  func exchanges(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    if path.count <= 2 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      if path.count == 2 { try await self.requireVhost(path[1], caller) }
      let view = caller.view
      let only = path.count == 2 ? path[1] : nil
      let rows = try await self.amqp.withBroker { broker in  // one hop: what the caller sees, and its figures
        view.listed(broker, only: only)
          .flatMap { vhost in vhost.exchanges.values.map { ExchangeSnapshot($0, vhost: vhost) } }
      }
      let rates = await self.statistics.exchangeRates()
      return try Self.listing(
        rows.map { Self.exchangeJSON($0, rate: rates[QueueKey(vhost: $0.vhost, name: $0.name)]) }, request)
    }
    // RabbitMQ's API names the default exchange `amq.default`.
    let (vhostName, name) = (path[1], path[2] == "amq.default" ? "" : path[2])
    try await self.requireVhost(vhostName, caller)
    if path.count == 5, path[3] == "bindings", request.method == .GET {
      let outgoing = path[4] == "source"
      guard outgoing || path[4] == "destination" else { throw ManagementError.notFound }
      let rows = try await self.amqp.withBroker { broker -> [BindingSnapshot]? in
        guard let vhost = broker.vhosts[vhostName], let exchange = vhost.exchanges[name] else { return nil }
        let bindings = outgoing ? exchange.outgoingBindings : exchange.incomingBindings
        return bindings.map { BindingSnapshot($0, vhost: vhostName) }
      }
      guard let rows else { throw ManagementError.notFound }
      return try Self.listing(rows.map(Self.bindingJSON), request, defaultSort: nil)
    }
    if path.count == 4, path[3] == "publish", request.method == .POST {
      return try await self.publish(request, caller, vhost: vhostName, exchange: name)
    }
    guard path.count == 3 else { throw ManagementError.notFound }
    switch request.method {
    case .GET:
      let row = try await self.amqp.withBroker { broker -> ExchangeSnapshot? in
        guard let vhost = broker.vhosts[vhostName], let exchange = vhost.exchanges[name] else { return nil }
        return ExchangeSnapshot(exchange, vhost: vhost)
      }
      guard let row else { throw ManagementError.notFound }
      let rates = await self.statistics.exchangeRates()
      return Self.json(Self.exchangeJSON(row, rate: rates[QueueKey(vhost: vhostName, name: name)]))
    case .PUT:
      try Self.checkName(name, "exchange")
      let body = try request.jsonObject()
      guard let type = body["type"]?.stringValue else { throw ManagementError.badRequest("missing type") }
      let durable = body["durable"]?.boolValue ?? true
      let autoDelete = body["auto_delete"]?.boolValue ?? false
      let isInternal = body["internal"]?.boolValue ?? false
      let arguments = try (body["arguments"] ?? .null).fieldTable()
      try await self.authorize(.configure, "exchange", name, vhost: vhostName, caller)
      let outcome = try await self.change { inspection throws(BrokerError) -> Bool in
        guard let vhost = inspection.broker.vhosts[vhostName] else { throw .notFound("vhost") }
        let existed = vhost.exchanges[name] != nil
        try vhost.declareExchange(
          name: name, type: type, durable: durable, autoDelete: autoDelete, isInternal: isInternal,
          arguments: arguments)
        return !existed
      }
      return outcome ? Self.created : Self.noContent
    case .DELETE:
      try await self.authorize(.configure, "exchange", name, vhost: vhostName, caller)
      let ifUnused = request.query["if-unused"] == "true"
      let outcome = try await self.change { inspection throws(BrokerError) -> Bool in
        guard let vhost = inspection.broker.vhosts[vhostName], vhost.exchanges[name] != nil else {
          return false
        }
        try vhost.deleteExchange(name: name, ifUnused: ifUnused)
        return true
      }
      guard outcome else { throw ManagementError.notFound }
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  static func exchangeJSON(_ exchange: ExchangeSnapshot, rate: Double?) -> JSONValue {
    var members: [(String, JSONValue)] = [
      ("name", .string(exchange.name)), ("vhost", .string(exchange.vhost)), ("type", .string(exchange.type)),
      ("durable", .bool(exchange.durable)), ("auto_delete", .bool(exchange.autoDelete)),
      ("internal", .bool(exchange.isInternal)), ("arguments", JSONValue(exchange.arguments)),
      ("policy", .string(exchange.policy)), ("user_who_performed_action", "rmq-internal"),
    ]
    if exchange.published > 0 {
      members.append(
        (
          "message_stats",
          .object([
            ("publish_in", .int(exchange.published)),
            ("publish_in_details", .object([("rate", .double(rate ?? 0))])),
          ])
        ))
    }
    return .object(members)
  }

  /// `POST /api/exchanges/{vhost}/{name}/publish`: `routing_key`, `payload`, `payload_encoding` (`string` or
  /// `base64`), `properties`; answers `{"routed": bool}`.
  private func publish(_ request: ManagementRequest, _ caller: Caller, vhost vhostName: String, exchange name: String)
    async throws -> HTTPResponse
  {
    let body = try request.jsonObject()
    guard let routingKey = body["routing_key"]?.stringValue else {
      throw ManagementError.badRequest("missing routing_key")
    }
    guard let payloadText = body["payload"]?.stringValue else { throw ManagementError.badRequest("missing payload") }
    let encoding = body["payload_encoding"]?.stringValue ?? "string"
    let payload: [UInt8]
    switch encoding {
    case "string": payload = Array(payloadText.utf8)
    case "base64":
      guard let data = Data(base64Encoded: payloadText) else {
        throw ManagementError.badRequest("invalid base64 payload")
      }
      payload = Array(data)
    default: throw ManagementError.badRequest("invalid payload_encoding '\(encoding)'")
    }
    let properties = try (body["properties"] ?? .null).basicProperties()
    try await self.authorize(.write, "exchange", name, vhost: vhostName, caller)
    let user = caller.user.name
    let routed = try await self.change { inspection throws(BrokerError) -> Bool in
      guard let vhost = inspection.broker.vhosts[vhostName] else { throw .notFound("vhost") }
      if let userID = properties.userId, userID != user {
        throw .preconditionFailed("user_id property set to '\(userID)' but authenticated user was '\(user)'")
      }
      let exchange: Exchange
      exchange = try vhost.exchangeForPublish(name)
      let message = Message.make(
        exchange: name, routingKey: routingKey, properties: properties, body: ByteBuffer(bytes: payload))
      inspection.broker.counters.values.messagesReceived += 1
      exchange.messagesPublished &+= 1
      let outcome = vhost.publish(message, routingKey: routingKey, to: exchange)
      return outcome.accepted > 0
    }
    return Self.json(.object([("routed", .bool(routed))]))
  }

  // MARK: Queues

  func queues(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    if path.count <= 2 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      if path.count == 2 { try await self.requireVhost(path[1], caller) }
      let view = caller.view
      let only = path.count == 2 ? path[1] : nil
      let rows = try await self.amqp.withBroker { broker in  // one hop: what the caller sees, and its figures
        view.listed(broker, only: only)
          .flatMap { vhost in vhost.queues.values.filter { !$0.isHolding }.map(QueueSnapshot.init) }
      }
      let rates = await self.statistics.queueRates()
      let node = self.node.name
      return try Self.listing(rows.map { Self.queueJSON($0, rates: rates[$0.key], node: node) }, request)
    }
    let (vhostName, name) = (path[1], path[2])
    try await self.requireVhost(vhostName, caller)
    if path.count == 4 {
      switch (request.method, path[3]) {
      case (.GET, "bindings"):
        let rows = try await self.amqp.withBroker { broker -> [BindingSnapshot]? in
          guard let vhost = broker.vhosts[vhostName], let queue = vhost.queues[name] else { return nil }
          return [BindingSnapshot(defaultBindingOf: name, vhost: vhostName)]
            + queue.incomingBindings.map { BindingSnapshot($0, vhost: vhostName) }
        }
        guard let rows else { throw ManagementError.notFound }
        return try Self.listing(rows.map(Self.bindingJSON), request, defaultSort: nil)
      case (.DELETE, "contents"):
        try await self.authorize(.read, "queue", name, vhost: vhostName, caller)
        let found = try await self.change { inspection throws(BrokerError) -> Bool in
          guard let queue = inspection.broker.vhosts[vhostName]?.queues[name], !queue.isHolding else { return false }
          _ = queue.purge()
          return true
        }
        guard found else { throw ManagementError.notFound }
        return Self.noContent
      case (.POST, "get"):
        return try await self.get(request, caller, vhost: vhostName, queue: name)
      default:
        throw ManagementError.notFound
      }
    }
    guard path.count == 3 else { throw ManagementError.notFound }
    switch request.method {
    case .GET:
      let row = try await self.amqp.inspect { inspection -> (QueueSnapshot, [ConsumerDetails])? in
        guard let queue = inspection.broker.vhosts[vhostName]?.queues[name], !queue.isHolding else { return nil }
        let consumers = inspection.consumerDetails().filter { $0.vhost == vhostName && $0.queue == name }
        return (QueueSnapshot(queue), consumers)
      }
      guard let (queue, consumers) = row else { throw ManagementError.notFound }
      let rates = await self.statistics.queueRates()
      guard case .object(var members) = Self.queueJSON(queue, rates: rates[queue.key], node: self.node.name) else {
        throw ManagementError.notFound
      }
      members.append(("consumer_details", .array(consumers.map(Self.consumerJSON))))
      members.append(("deliveries", []))
      members.append(("incoming", []))
      return Self.json(.object(members))
    case .PUT:
      try Self.checkName(name, "queue")
      let body = try request.jsonObject()
      let durable = body["durable"]?.boolValue ?? true
      let autoDelete = body["auto_delete"]?.boolValue ?? false
      var requested = try (body["arguments"] ?? .null).fieldTable()
      if let type = body["type"]?.stringValue, requested["x-queue-type"] == nil {
        requested["x-queue-type"] = .longString(type)
      }
      let arguments = requested
      if name.hasPrefix("amq.") {  // as RabbitMQ's API answers a reserved name
        throw ManagementError(.unauthorized, "not_authorised", "Access refused.")
      }
      try await self.authorize(.configure, "queue", name, vhost: vhostName, caller)
      let outcome = try await self.change { inspection throws(BrokerError) -> Bool in
        guard let vhost = inspection.broker.vhosts[vhostName] else { throw .notFound("vhost") }
        let existed = vhost.queues[name] != nil
        try vhost.declareQueue(
          name: name, durable: durable, autoDelete: autoDelete, arguments: arguments, connection: 0)
        return !existed
      }
      return outcome ? Self.created : Self.noContent
    case .DELETE:
      try await self.authorize(.configure, "queue", name, vhost: vhostName, caller)
      let ifUnused = request.query["if-unused"] == "true"
      let ifEmpty = request.query["if-empty"] == "true"
      let outcome = try await self.change { inspection throws(BrokerError) -> Bool in
        guard let vhost = inspection.broker.vhosts[vhostName], let queue = vhost.queues[name], !queue.isHolding else {
          return false
        }
        if ifUnused && !queue.consumers.isEmpty {
          throw .preconditionFailed("queue '\(name)' in vhost '\(vhostName)' in use")
        }
        if ifEmpty && queue.messageCount > 0 {
          throw .preconditionFailed("queue '\(name)' in vhost '\(vhostName)' not empty")
        }
        vhost.removeQueue(queue)
        return true
      }
      guard outcome else { throw ManagementError.notFound }
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  static func queueJSON(_ queue: QueueSnapshot, rates: QueueRates?, node: String) -> JSONValue {
    let rates = rates ?? QueueRates()
    var members: [(String, JSONValue)] = [
      ("name", .string(queue.name)), ("vhost", .string(queue.vhost)), ("durable", .bool(queue.durable)),
      ("auto_delete", .bool(queue.autoDelete)), ("exclusive", .bool(queue.exclusive)),
      ("arguments", JSONValue(queue.arguments)), ("node", .string(node)), ("state", "running"),
      ("type", .string(queue.type)), ("policy", .string(queue.policy)),
      ("operator_policy", .string(queue.operatorPolicy)),
      ("effective_policy_definition", JSONValue(queue.effectivePolicy)),
      ("exclusive_consumer_tag", .string(queue.exclusiveConsumerTag)),
      ("consumers", .int(queue.consumers)), ("consumer_capacity", .double(queue.consumers > 0 ? 1 : 0)),
      ("consumer_utilisation", .double(queue.consumers > 0 ? 1 : 0)),
      ("messages", .int(queue.ready + queue.unacked)),
      ("messages_details", .object([("rate", .double(rates.messages))])),
      ("messages_ready", .int(queue.ready)), ("messages_ready_details", .object([("rate", .double(rates.ready))])),
      ("messages_unacknowledged", .int(queue.unacked)),
      ("messages_unacknowledged_details", .object([("rate", .double(rates.unacked))])),
      ("message_bytes", .int(queue.readyBytes + queue.unackedBytes)),
      ("message_bytes_ready", .int(queue.readyBytes)), ("message_bytes_unacknowledged", .int(queue.unackedBytes)),
    ]
    if queue.published > 0 {
      members.append(
        (
          "message_stats",
          .object([
            ("publish", .int(queue.published)), ("publish_details", .object([("rate", .double(rates.publish))])),
          ])
        ))
    }
    return .object(members)
  }

  /// `POST /api/queues/{vhost}/{name}/get`: `count`, `ackmode` (`ack_requeue_true`, `ack_requeue_false`,
  /// `reject_requeue_true`, `reject_requeue_false`), `encoding` (`auto` or `base64`), `truncate`.
  private func get(_ request: ManagementRequest, _ caller: Caller, vhost vhostName: String, queue name: String)
    async throws -> HTTPResponse
  {
    let body = try request.jsonObject()
    guard let count = body["count"]?.intValue, count >= 1 else { throw ManagementError.badRequest("missing count") }
    let ackmode =
      body["ackmode"]?.stringValue
      ?? body["requeue"].flatMap { $0.boolValue == false ? "ack_requeue_false" : "ack_requeue_true" }
    guard let ackmode,
      ["ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false"].contains(ackmode)
    else { throw ManagementError.badRequest("invalid ackmode") }
    let encoding = body["encoding"]?.stringValue ?? "auto"
    guard encoding == "auto" || encoding == "base64" else { throw ManagementError.badRequest("invalid encoding") }
    let truncate = body["truncate"]?.intValue.map(Int.init)
    try await self.authorize(.read, "queue", name, vhost: vhostName, caller)
    let limit = Int(min(count, 10_000))
    let got = try await self.change { inspection throws(BrokerError) -> [GotMessage]? in
      guard let queue = inspection.broker.vhosts[vhostName]?.queues[name], !queue.isHolding else { return nil }
      var taken: [QueuedMessage] = []
      var result: [GotMessage] = []
      while taken.count < limit, let message = queue.get(noAck: false) {
        taken.append(message)
        result.append(GotMessage(message.message, redelivered: message.redelivered))
      }
      // message_count as basic.get-ok's: what was left in the queue after each message was taken.
      let remaining = queue.messageCount
      for i in result.indices { result[i].remaining = remaining + result.count - 1 - i }
      switch ackmode {
      case "ack_requeue_false": for message in taken { queue.settle(message) }
      case "reject_requeue_false": for message in taken { queue.reject(message) }
      default: queue.requeue(taken)
      }
      queue.dispatch()
      return result
    }
    guard let got else { throw ManagementError.notFound }
    let items: [JSONValue] = got.map { message in
      var payload = message.body
      let size = payload.count
      if let truncate, truncate >= 0, payload.count > truncate { payload = Array(payload[..<truncate]) }
      let text = String(validating: payload, as: UTF8.self)
      let (encoded, used): (String, String) =
        encoding == "auto" && text != nil ? (text!, "string") : (Data(payload).base64EncodedString(), "base64")
      return .object([
        ("payload_bytes", .int(size)), ("redelivered", .bool(message.redelivered)),
        ("exchange", .string(message.exchange)), ("routing_key", .string(message.routingKey)),
        ("message_count", .int(message.remaining)),
        ("properties", JSONValue(message.properties)), ("payload", .string(encoded)),
        ("payload_encoding", .string(used)),
      ])
    }
    return Self.json(.array(items))
  }

  // MARK: Bindings

  func bindings(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    if path.count <= 2 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      if path.count == 2 { try await self.requireVhost(path[1], caller) }
      let view = caller.view
      let only = path.count == 2 ? path[1] : nil
      let rows = try await self.amqp.withBroker { broker in  // one hop: what the caller sees, and its figures
        view.listed(broker, only: only)
          .flatMap { vhost in
            vhost.queues.values.filter { !$0.isHolding }.map {
              BindingSnapshot(defaultBindingOf: $0.name, vhost: vhost.name)
            }
              + vhost.bindings.map { BindingSnapshot($0, vhost: vhost.name) }
          }
      }
      return try Self.listing(rows.map(Self.bindingJSON), request, defaultSort: nil)
    }
    // /api/bindings/{vhost}/e/{source}/{q|e}/{destination}[/{props}]
    guard path.count >= 6, path[2] == "e", path[4] == "q" || path[4] == "e" else { throw ManagementError.notFound }
    let vhostName = path[1]
    let (source, destination) = (path[3], path[5])
    let toQueue = path[4] == "q"
    try await self.requireVhost(vhostName, caller)
    let current = try await self.amqp.withBroker { broker -> [BindingSnapshot]? in
      guard let vhost = broker.vhosts[vhostName], let exchange = vhost.exchanges[source] else { return nil }
      if toQueue, vhost.queues[destination] == nil { return nil }
      if !toQueue, vhost.exchanges[destination] == nil { return nil }
      return exchange.outgoingBindings.filter {
        $0.destination.name == destination && ($0.destination.queue != nil) == toQueue
      }.map { BindingSnapshot($0, vhost: vhostName) }
    }
    if path.count == 6 {
      switch request.method {
      case .GET:
        guard let current else { throw ManagementError.notFound }
        return try Self.listing(current.map(Self.bindingJSON), request, defaultSort: nil)
      case .POST:
        guard current != nil else { throw ManagementError.notFound }
        let body = try request.jsonObject()
        let routingKey = body["routing_key"]?.stringValue ?? ""
        let arguments = try (body["arguments"] ?? .null).fieldTable()
        try await self.authorize(.write, toQueue ? "queue" : "exchange", destination, vhost: vhostName, caller)
        try await self.authorize(.read, "exchange", source, vhost: vhostName, caller)
        try await self.change { inspection throws(BrokerError) in
          guard let vhost = inspection.broker.vhosts[vhostName] else { throw .notFound("vhost") }
          if toQueue {
            try vhost.bindQueue(destination, to: source, routingKey: routingKey, arguments: arguments, connection: 0)
          } else {
            try vhost.bindExchange(
              destination: destination, source: source, routingKey: routingKey, arguments: arguments)
          }
        }
        let made = BindingSnapshot(
          vhost: vhostName, source: source, destination: destination, destinationType: toQueue ? "queue" : "exchange",
          routingKey: routingKey, arguments: arguments)
        var response = Self.created
        response.headers.append(("Location", destination + "/" + made.propertiesKey))
        return response
      default:
        throw ManagementError.methodNotAllowed
      }
    }
    guard path.count == 7, let current else { throw ManagementError.notFound }
    let key = path[6]
    guard
      let binding = current.first(where: { $0.propertiesKey == key || $0.propertiesKey.removingPercentEncoding == key })
    else { throw ManagementError.notFound }
    switch request.method {
    case .GET:
      return Self.json(Self.bindingJSON(binding))
    case .DELETE:
      try await self.authorize(.write, toQueue ? "queue" : "exchange", destination, vhost: vhostName, caller)
      try await self.authorize(.read, "exchange", source, vhost: vhostName, caller)
      try await self.change { inspection throws(BrokerError) in
        guard let vhost = inspection.broker.vhosts[vhostName] else { throw .notFound("vhost") }
        if toQueue {
          try vhost.unbindQueue(
            destination, from: source, routingKey: binding.routingKey, arguments: binding.arguments, connection: 0)
        } else {
          try vhost.unbindExchange(
            destination: destination, source: source, routingKey: binding.routingKey, arguments: binding.arguments)
        }
      }
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  static func bindingJSON(_ binding: BindingSnapshot) -> JSONValue {
    .object([
      ("source", .string(binding.source)), ("vhost", .string(binding.vhost)),
      ("destination", .string(binding.destination)), ("destination_type", .string(binding.destinationType)),
      ("routing_key", .string(binding.routingKey)), ("arguments", JSONValue(binding.arguments)),
      ("properties_key", .string(binding.propertiesKey)),
    ])
  }

  // MARK: Connections, channels, consumers

  func connections(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    let all = try await self.amqp.inspect { $0.connectionDetails() }
    let visible = all.filter { self.mayView($0.user, caller) }
    if path.count == 1 {
      guard request.method == .GET else { throw ManagementError.methodNotAllowed }
      return try Self.listing(visible.map(Self.connectionJSON), request)
    }
    let name = path[1]
    guard let connection = visible.first(where: { $0.name == name }) else { throw ManagementError.notFound }
    if path.count == 3, path[2] == "channels", request.method == .GET {
      let channels = try await self.amqp.inspect { $0.channelDetails() }.filter { $0.connectionName == name }
      return try Self.listing(channels.map(Self.channelJSON), request)
    }
    guard path.count == 2 else { throw ManagementError.notFound }
    switch request.method {
    case .GET:
      return Self.json(Self.connectionJSON(connection))
    case .DELETE:
      let reason =
        request.head.headers.first(name: "X-Reason").map { "CONNECTION_FORCED - \($0)" }
        ?? "CONNECTION_FORCED - Closed via management plugin"
      let closed = try await self.amqp.inspect { $0.closeConnection(named: name, reason: reason) }
      guard closed else { throw ManagementError.notFound }
      return Self.noContent
    default:
      throw ManagementError.methodNotAllowed
    }
  }

  static func connectionJSON(_ c: ConnectionDetails) -> JSONValue {
    .object([
      ("name", .string(c.name)), ("vhost", .string(c.vhost)), ("user", .string(c.user)),
      ("user_who_performed_action", .string(c.user)), ("node", "warren"), ("type", "network"),
      ("protocol", "AMQP 0-9-1"), ("host", "127.0.0.1"), ("port", .int(c.port)), ("peer_host", .string(c.peerHost)),
      ("peer_port", .int(c.peerPort)), ("state", .string(c.state)), ("channels", .int(c.channels)),
      ("channel_max", .int(c.channelMax)), ("frame_max", .int(c.frameMax)), ("timeout", .int(c.heartbeat)),
      ("auth_mechanism", .string(c.authMechanism)), ("client_properties", JSONValue(c.clientProperties)),
      ("connected_at", .int(Int64(clamping: c.connectedAt))), ("ssl", .bool(c.tlsProtocol != nil)),
      ("ssl_protocol", c.tlsProtocol.map(JSONValue.string) ?? .null), ("recv_oct", .int(c.bytesReceived)),
      ("recv_oct_details", .object([("rate", 0.0)])), ("send_oct", .int(c.bytesSent)),
      ("send_oct_details", .object([("rate", 0.0)])), ("send_pend", .int(c.pendingBytes)),
    ])
  }

  func channels(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    guard request.method == .GET else { throw ManagementError.methodNotAllowed }
    let all = try await self.amqp.inspect { $0.channelDetails() }.filter { self.mayView($0.user, caller) }
    if path.count == 1 { return try Self.listing(all.map(Self.channelJSON), request) }
    guard path.count == 2, let channel = all.first(where: { $0.name == path[1] }) else {
      throw ManagementError.notFound
    }
    return Self.json(Self.channelJSON(channel))
  }

  static func channelJSON(_ c: ChannelDetails) -> JSONValue {
    .object([
      ("name", .string(c.name)), ("number", .int(c.number)), ("vhost", .string(c.vhost)), ("user", .string(c.user)),
      ("user_who_performed_action", .string(c.user)), ("node", "warren"),
      (
        "connection_details",
        .object([
          ("name", .string(c.connectionName)), ("peer_host", .string(c.peerHost)), ("peer_port", .int(c.peerPort)),
        ])
      ),
      ("state", .string(c.closing ? "closing" : (c.flowActive ? "running" : "flow"))), ("confirm", .bool(c.confirm)),
      ("transactional", .bool(c.transactional)), ("prefetch_count", .int(c.prefetchCount)),
      ("global_prefetch_count", .int(c.globalPrefetchCount)), ("messages_unacknowledged", .int(c.unacknowledged)),
      ("messages_unconfirmed", .int(c.unconfirmed)), ("messages_uncommitted", 0), ("acks_uncommitted", 0),
      ("consumer_count", .int(c.consumerCount)),
    ])
  }

  func consumers(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    guard request.method == .GET, path.count <= 2 else { throw ManagementError.notFound }
    if path.count == 2 { try await self.requireVhost(path[1], caller) }
    let visible = try await self.visibleVhosts(caller)
    let only = path.count == 2 ? path[1] : nil
    let all = try await self.amqp.inspect { $0.consumerDetails() }.filter {
      visible.contains($0.vhost) && (only == nil || $0.vhost == only) && self.mayView($0.channel.user, caller)
    }
    return try Self.listing(all.map(Self.consumerJSON), request, defaultSort: nil)
  }

  static func consumerJSON(_ c: ConsumerDetails) -> JSONValue {
    .object([
      ("consumer_tag", .string(c.tag)), ("queue", .object([("name", .string(c.queue)), ("vhost", .string(c.vhost))])),
      ("ack_required", .bool(c.ackRequired)), ("exclusive", .bool(c.exclusive)), ("active", true),
      ("activity_status", "up"), ("prefetch_count", .int(c.prefetchCount)), ("arguments", JSONValue(c.arguments)),
      (
        "channel_details",
        .object([
          ("name", .string(c.channel.name)), ("number", .int(c.channel.number)),
          ("connection_name", .string(c.channel.connectionName)), ("peer_host", .string(c.channel.peerHost)),
          ("peer_port", .int(c.channel.peerPort)), ("user", .string(c.channel.user)), ("node", "warren"),
        ])
      ),
    ])
  }
}

/// A message taken by `/api/queues/.../get`, copied out of the broker's loop.
struct GotMessage: Sendable {
  var exchange: String
  var routingKey: String
  var properties: BasicProperties
  var body: [UInt8]
  var redelivered: Bool
  var remaining = 0

  init(_ message: Message, redelivered: Bool) {
    self.exchange = message.exchange
    self.routingKey = message.routingKey
    self.properties = message.properties
    self.body = Array(message.body.readableBytesView)
    self.redelivered = redelivered
  }
}
