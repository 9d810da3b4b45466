import AMQPProtocol
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import WarrenConfig
import WarrenCore
import WarrenHTTP
import WarrenServer
import WarrenSystem

/// The node's fixed facts, for `/api/overview` and `/api/nodes`.
public struct ManagementNode: Sendable {
  public var name: String
  public var version: String
  public var startTime: Double
  public var amqpPort: Int
  /// The management listener's port, known once it is bound (it may have been asked as 0).
  private let managementPortBox: NIOLockedValueBox<Int>
  public var managementPort: Int { self.managementPortBox.withLockedValue { $0 } }
  /// Records the port the management listener was bound to.
  public func listening(on port: Int) { self.managementPortBox.withLockedValue { $0 = port } }
  public var dataDirectory: String

  public init(
    name: String, version: String, startTime: Double, amqpPort: Int, managementPort: Int, dataDirectory: String
  ) {
    self.name = name
    self.version = version
    self.startTime = startTime
    self.amqpPort = amqpPort
    self.managementPortBox = NIOLockedValueBox(managementPort)
    self.dataDirectory = dataDirectory
  }
}

/// RabbitMQ's management HTTP API (`/api/...`) over a running broker: HTTP basic authentication against the
/// broker's users and their tags, RabbitMQ's paths, JSON fields and status codes. Every answer reads a snapshot
/// taken in one hop to the broker's event loop; every change is made in one hop too (durable entities go through
/// the store as over AMQP; users, vhosts, permissions and policies are saved to the data directory).
public struct ManagementAPI: Sendable {
  let amqp: AMQPServer
  var node: ManagementNode
  let statistics: MessageStatistics
  let definitions: DefinitionsFile?
  /// The exchange types, for checking imported definitions.
  let registry: ExchangeRegistry
  /// The web UI's files by path (`/`, `/app.js`, ...), served without authentication (the UI logs in itself).
  let assets: [String: (contentType: String, bytes: ByteBuffer)]

  public init(
    amqp: AMQPServer, node: ManagementNode, statistics: MessageStatistics, definitions: DefinitionsFile?,
    registry: ExchangeRegistry, assets: [String: (contentType: String, bytes: ByteBuffer)] = ManagementUI.assets
  ) {
    self.amqp = amqp
    self.node = node
    self.statistics = statistics
    self.definitions = definitions
    self.registry = registry
    self.assets = assets
  }

  /// The answer to one request.
  public func respond(to request: HTTPRequest) async -> HTTPResponse {
    do {
      let parsed = try ManagementRequest(request)
      if parsed.segments.first != "api" {
        return try self.asset(parsed)
      }
      let caller = try await self.authenticate(parsed)
      return try await self.route(parsed, caller: caller)
    } catch let error as ManagementError {
      return error.response
    } catch let error as BrokerError {
      return ManagementError(error).response
    } catch {
      return ManagementError(.internalServerError, "internal_server_error", "\(error)").response
    }
  }

  // MARK: Authentication

  private func authenticate(_ request: ManagementRequest) async throws -> Caller {
    // No challenge for the web UI's own requests (marked as XMLHttpRequest): a browser would put up its password
    // dialog over the UI's login form.
    let fromUI = request.head.headers.first(name: "X-Requested-With") == "XMLHttpRequest"
    let challenge = fromUI ? [] : [("WWW-Authenticate", #"Basic realm="Warren Management""#)]
    func refusal(_ error: String, _ reason: String) -> ManagementError {
      var refusal = ManagementError(.unauthorized, error, reason)
      refusal.headers = challenge
      return refusal
    }
    let user: User
    switch try await self.amqp.authenticate(request.head.headers, from: request.remote) {
    case .missing: throw refusal("not_authorized", "Not_Authorized")
    case .refused: throw refusal("not_authorized", "Login failed")
    case .user(let found): user = found
    }
    let caller = Caller(user: user)
    guard caller.isManagementUser else { throw refusal("not_authorised", "Not management user") }
    return caller
  }

  // MARK: Routing

  private func route(_ request: ManagementRequest, caller: Caller) async throws -> HTTPResponse {
    let path = Array(request.segments.dropFirst())
    let method = request.method
    switch (method, path.count > 0 ? path[0] : "") {
    case (.GET, "overview") where path.count == 1: return try await self.overview(request, caller)
    case (.GET, "whoami") where path.count == 1:
      return Self.json(["name": .string(caller.user.name), "tags": .array(caller.user.tags.map { .string($0) })])
    case (_, "nodes"): return try await self.nodes(request, caller, path)
    case (_, "vhosts"): return try await self.vhosts(request, caller, path)
    case (_, "users"): return try await self.users(request, caller, path)
    case (_, "permissions"): return try await self.permissions(request, caller, path)
    case (_, "exchanges"): return try await self.exchanges(request, caller, path)
    case (_, "queues"): return try await self.queues(request, caller, path)
    case (_, "bindings"): return try await self.bindings(request, caller, path)
    case (_, "connections"): return try await self.connections(request, caller, path)
    case (_, "channels"): return try await self.channels(request, caller, path)
    case (_, "consumers"): return try await self.consumers(request, caller, path)
    case (_, "policies"): return try await self.policies(request, caller, path, operator: false)
    case (_, "operator-policies"): return try await self.policies(request, caller, path, operator: true)
    case (_, "definitions"): return try await self.definitionsEndpoint(request, caller, path)
    case (_, "vhost-limits"): return try await self.limits(request, caller, path, ofUsers: false)
    case (_, "user-limits"): return try await self.limits(request, caller, path, ofUsers: true)
    case (.GET, "health"): return try await self.health(request, caller, path)
    case (.GET, "aliveness-test") where path.count == 2: return try await self.aliveness(caller, vhost: path[1])
    case (.GET, "extensions"): return Self.json([])
    default: throw ManagementError.notFound
    }
  }

  // MARK: Visibility

  /// The vhosts a caller sees: all for administrators and monitors, else those it has permissions in.
  func visibleVhosts(_ caller: Caller) async throws -> Set<String> {
    let view = caller.view
    return try await self.amqp.withBroker { view.vhosts(of: $0) }
  }

  /// Throws 404 unless the vhost exists, 401 unless the caller may see it (as RabbitMQ answers).
  func requireVhost(_ vhost: String, _ caller: Caller) async throws {
    let visible = try await self.visibleVhosts(caller)
    if visible.contains(vhost) { return }
    let exists = try await self.amqp.withBroker { $0.vhosts[vhost] != nil }
    if !exists { throw ManagementError.notFound }
    throw ManagementError(.unauthorized, "not_authorised", "Access refused.")
  }

  // MARK: Overview and nodes

  private func overview(_ request: ManagementRequest, _ caller: Caller) async throws -> HTTPResponse {
    let visible = try await self.visibleVhosts(caller)
    let snapshot = try await self.amqp.inspect { OverviewSnapshot($0, visible: { visible.contains($0) }) }
    let rates = await self.statistics.rates()
    let messageStats = Self.messageStats(snapshot.counters, rates: rates)
    var object: [(String, JSONValue)] = [
      ("management_version", .string(self.node.version)), ("rates_mode", "basic"),
      (
        "exchange_types",
        .array(
          snapshot.exchangeTypes.map(\.json))
      ),
      ("product_version", .string(self.node.version)), ("product_name", "Warren"),
      ("rabbitmq_version", "3.10.8"), ("cluster_name", .string(self.node.name)),
      ("erlang_version", "-"), ("disable_stats", false), ("enable_queue_totals", true),
      ("message_stats", messageStats),
      (
        "queue_totals",
        .object([
          ("messages", .int(snapshot.ready + snapshot.unacked)),
          ("messages_details", .object([("rate", .double(rates.messages))])),
          ("messages_ready", .int(snapshot.ready)),
          ("messages_ready_details", .object([("rate", .double(rates.ready))])),
          ("messages_unacknowledged", .int(snapshot.unacked)),
          ("messages_unacknowledged_details", .object([("rate", .double(rates.unacked))])),
        ])
      ),
      (
        "object_totals",
        .object([
          ("channels", .int(snapshot.channels)), ("connections", .int(snapshot.connections)),
          ("consumers", .int(snapshot.consumers)), ("exchanges", .int(snapshot.exchanges)),
          ("queues", .int(snapshot.queues)),
        ])
      ),
      ("node", .string(self.node.name)),
      (
        "listeners",
        .array([
          .object([
            ("node", .string(self.node.name)), ("protocol", "amqp"), ("ip_address", "127.0.0.1"),
            ("port", .int(self.node.amqpPort)),
          ]),
          .object([
            ("node", .string(self.node.name)), ("protocol", "http"), ("ip_address", "127.0.0.1"),
            ("port", .int(self.node.managementPort)),
          ]),
        ])
      ),
      ("contexts", []),
    ]
    if request.query["history"] == "true" {
      object.append(("history", await self.statistics.historyJSON()))
    }
    return Self.json(.object(object))
  }

  static func messageStats(_ counters: BrokerCounters.Values, rates: MessageStatistics.Rates) -> JSONValue {
    func stat(_ name: String, _ value: Int, _ rate: Double) -> [(String, JSONValue)] {
      [(name, .int(value)), (name + "_details", .object([("rate", .double(rate))]))]
    }
    var members: [(String, JSONValue)] = []
    members += stat("publish", counters.messagesReceived, rates.publish)
    members += stat("confirm", counters.messagesConfirmed, rates.confirm)
    members += stat("return_unroutable", counters.messagesUnroutableReturned, rates.returnUnroutable)
    members += stat("drop_unroutable", counters.messagesUnroutableDropped, rates.dropUnroutable)
    members += stat("deliver_get", counters.messagesDelivered, rates.deliverGet)
    members += stat(
      "deliver", counters.messagesDeliveredConsumeManualAck, rates.deliverManualAck)
    members += stat("deliver_no_ack", counters.messagesDeliveredConsumeAutoAck, rates.deliverAutoAck)
    members += stat("get", counters.messagesDeliveredGetManualAck, rates.getManualAck)
    members += stat("get_no_ack", counters.messagesDeliveredGetAutoAck, rates.getAutoAck)
    members += stat("get_empty", counters.messagesGetEmpty, rates.getEmpty)
    members += stat("ack", counters.messagesAcknowledged, rates.ack)
    members += stat("redeliver", counters.messagesRedelivered, rates.redeliver)
    return .object(members)
  }

  private func nodes(_ request: ManagementRequest, _ caller: Caller, _ path: [String]) async throws -> HTTPResponse {
    guard request.method == .GET else { throw ManagementError.methodNotAllowed }
    try caller.requireMonitor()
    let (alarms, connections) = try await self.amqp.inspect { ($0.alarms, $0.connectionCount) }
    let process = ProcessStatistics.read(dataDirectory: self.node.dataDirectory)
    let node: JSONValue = .object([
      ("name", .string(self.node.name)), ("type", "disc"), ("running", true), ("being_drained", false),
      ("os_pid", .string("\(getpid())")), ("mem_used", .int(process.residentMemory)),
      ("mem_limit", .int(alarms.memoryLimit)), ("mem_alarm", .bool(alarms.memory)),
      ("disk_free", .int(process.diskFree)), ("disk_free_limit", .int(alarms.diskFreeLimit)),
      ("disk_free_alarm", .bool(alarms.disk)), ("fd_used", .int(process.openFileDescriptors)),
      ("fd_total", .int(process.maxFileDescriptors)), ("sockets_used", .int(connections)),
      ("sockets_total", .int(process.maxFileDescriptors)), ("proc_used", 0),
      ("proc_total", .int(1_048_576)), ("processors", .int(ProcessInfo.processInfo.activeProcessorCount)),
      ("uptime", .int(Int(max(0, (Date().timeIntervalSince1970 - self.node.startTime) * 1000)))),
      ("run_queue", 0), ("rates_mode", "basic"), ("partitions", []), ("applications", []), ("contexts", []),
      ("exchange_types", .array(try await self.exchangeTypes())),
      (
        "auth_mechanisms",
        .array([.object([("name", "PLAIN"), ("enabled", true)]), .object([("name", "AMQPLAIN"), ("enabled", true)])])
      ),
    ])
    if path.count == 1 { return Self.json(try Listing(query: request.query).apply(to: [node])) }
    guard path.count == 2, path[1] == self.node.name else { throw ManagementError.notFound }
    return Self.json(node)
  }

  private func exchangeTypes() async throws -> [JSONValue] {
    try await self.amqp.withBroker { broker in
      ExchangeTypeInfo.all(broker.registry)
    }.map(\.json)
  }

  // MARK: Helpers

  static func json(_ value: JSONValue, status: HTTPResponseStatus = .ok) -> HTTPResponse {
    var buffer = ByteBuffer(bytes: value.encoded())
    buffer.writeString("\n")
    return HTTPResponse(status: status, contentType: "application/json", bytes: buffer)
  }

  static let created = HTTPResponse(status: .created, contentType: "application/json", bytes: ByteBuffer())
  static let noContent = HTTPResponse(status: .noContent, contentType: "application/json", bytes: ByteBuffer())

  /// Answers a listing with RabbitMQ's paging, sorting, filtering and column parameters.
  static func listing(_ items: [JSONValue], _ request: ManagementRequest, defaultSort: String? = "name")
    throws(ManagementError) -> HTTPResponse
  {
    var listing = try Listing(query: request.query)
    if listing.sort == nil, let defaultSort, listing.page != nil || request.query["sort"] == nil {
      listing.sort = defaultSort
    }
    return Self.json(try listing.apply(to: items))
  }

  /// Saves users, vhosts, permissions and policies after a change (they survive a restart).
  func saveDefinitions() async {
    guard let definitions = self.definitions else { return }
    await definitions.save(from: self.amqp)
  }
}
