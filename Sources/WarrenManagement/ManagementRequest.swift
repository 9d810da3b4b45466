import Foundation
import NIOCore
import NIOHTTP1
import WarrenCore
import WarrenHTTP

/// An error answered as RabbitMQ's management API does: a status and `{"error": ..., "reason": ...}`.
public struct ManagementError: Error, Sendable {
  public var status: HTTPResponseStatus
  public var error: String
  public var reason: String
  public var headers: [(String, String)] = []

  public init(_ status: HTTPResponseStatus, _ error: String, _ reason: String) {
    self.status = status
    self.error = error
    self.reason = reason
  }

  static let notFound = ManagementError(.notFound, "Object Not Found", "Not Found")
  static func badRequest(_ reason: String) -> ManagementError { ManagementError(.badRequest, "bad_request", reason) }
  static let methodNotAllowed = ManagementError(.methodNotAllowed, "bad_request", "method not allowed")

  /// A broker's refusal in RabbitMQ's words (404 for a missing object, 400 for an inequivalent one, 403 refused).
  init(_ error: BrokerError) {
    // The reply text without its "PRECONDITION_FAILED - " head, as RabbitMQ's API words it.
    var reason = error.replyText
    if let dash = reason.range(of: " - "), reason[..<dash.lowerBound].allSatisfy({ $0.isUppercase || $0 == "_" }) {
      reason = String(reason[dash.upperBound...])
    }
    switch error.replyCode {
    case 404: self.init(.notFound, "Object Not Found", "Not Found")
    case 403: self.init(.forbidden, "access_refused", reason)
    default: self.init(.badRequest, "bad_request", reason)
    }
  }

  var response: HTTPResponse {
    let body: JSONValue = .object([("error", .string(self.error)), ("reason", .string(self.reason))])
    var bytes = ByteBuffer(bytes: body.encoded())
    bytes.writeString("\n")
    return HTTPResponse(status: self.status, contentType: "application/json", bytes: bytes, headers: self.headers)
  }
}

/// A request to the management API: method, the path's segments (percent-decoded one by one, so that `%2F` is a
/// vhost named `/`), the query and the body.
struct ManagementRequest {
  var method: HTTPMethod
  var segments: [String]
  var query: [String: String]
  var body: ByteBuffer
  var head: HTTPRequestHead
  var remote: SocketAddress?

  init(_ request: HTTPRequest) throws(ManagementError) {
    self.method = request.head.method
    self.head = request.head
    self.remote = request.remote
    self.body = request.body
    let uri = request.head.uri
    let pathPart: Substring
    var query: [String: String] = [:]
    if let mark = uri.firstIndex(of: "?") {
      pathPart = uri[..<mark]
      for pair in uri[uri.index(after: mark)...].split(separator: "&") {
        let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard let key = Self.decode(parts[0]) else { throw .badRequest("invalid query") }
        let value = parts.count > 1 ? Self.decode(parts[1]) : ""
        guard let value else { throw .badRequest("invalid query") }
        query[key] = value
      }
    } else {
      pathPart = uri[...]
    }
    var segments: [String] = []
    for raw in pathPart.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
      guard let segment = raw.removingPercentEncoding else { throw .badRequest("invalid path") }
      segments.append(segment)
    }
    if segments.last == "" { segments.removeLast() }
    self.segments = segments
    self.query = query
  }

  private static func decode(_ text: Substring) -> String? {
    text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
  }

  /// The body as a JSON object (an empty body is an empty object): RabbitMQ's 400 `not_json` otherwise.
  func jsonObject() throws(ManagementError) -> JSONValue {
    if self.body.readableBytes == 0 { return .object([]) }
    guard let value = JSONValue.decode(Data(self.body.readableBytesView)) else { throw .badRequest("not_json") }
    switch value {
    case .object: return value
    case .null: return .object([])
    case .string:
      throw .badRequest(
        "invalid payload: the request body JSON-decoded to a string. Is the input doubly-JSON-encoded?")
    default: throw .badRequest("not_json")
    }
  }
}

/// Who is calling, after HTTP basic authentication, and what their tags let them do (RabbitMQ's management tags).
struct Caller: Sendable {
  var user: User

  var tags: Set<String> { Set(self.user.tags) }
  var isAdministrator: Bool { self.tags.contains("administrator") }
  /// Sees every vhost's connections, channels and node figures (`monitoring` and `administrator`).
  var isMonitor: Bool { self.isAdministrator || self.tags.contains("monitoring") }
  /// Manages policies in the vhosts it can reach (`policymaker` and `administrator`).
  var isPolicymaker: Bool { self.isAdministrator || self.tags.contains("policymaker") }
  /// May use the management API at all.
  var isManagementUser: Bool {
    !self.tags.isDisjoint(with: ["administrator", "monitoring", "policymaker", "management"])
  }

  /// What the caller may see, to take into a snapshot's hop.
  var view: CallerView { CallerView(user: self.user.name, everything: self.isMonitor) }

  static let notAdministrator = ManagementError(.forbidden, "not_authorised", "Not administrator user")
  static let notMonitor = ManagementError(.forbidden, "not_authorised", "Not monitor user")
  static let notPolicymaker = ManagementError(.forbidden, "not_authorised", "Not policymaker user")

  func requireAdministrator() throws(ManagementError) {
    if !self.isAdministrator { throw Self.notAdministrator }
  }

  func requireMonitor() throws(ManagementError) {
    if !self.isMonitor { throw Self.notMonitor }
  }
}

/// The caller's visibility, evaluated on the broker's loop inside the same hop as a listing's snapshot.
struct CallerView: Sendable {
  var user: String
  var everything: Bool

  /// The vhosts seen: all, or those the user has permissions in.
  func vhosts(of broker: Broker) -> Set<String> {
    if self.everything { return Set(broker.vhosts.keys) }
    return Set((broker.permissions[self.user] ?? [:]).keys).intersection(broker.vhosts.keys)
  }

  /// The vhosts to list: those seen, or only `only` (when seen).
  func listed(_ broker: Broker, only: String?) -> [VirtualHost] {
    let seen = self.vhosts(of: broker)
    return broker.vhosts.values.filter { seen.contains($0.name) && (only == nil || $0.name == only) }
  }
}
