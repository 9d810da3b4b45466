import Foundation
import NIOCore
import NIOHTTP1
import WarrenConfig
import WarrenCore
import WarrenMetrics
import WarrenServer
import WarrenSystem

/// The HTTP listener's routes: health, readiness, aliveness, metrics and the running topology.
public struct HTTPRoutes: Sendable {
  let amqp: AMQPServer
  let renderer: MetricsRenderer
  let dataDirectory: String
  /// Whether `/metrics*` need basic authentication too (a user tagged `monitoring` or `administrator`).
  let metricsNeedAuthentication: Bool

  static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

  /// Routes for a broker; `dataDirectory` is where free disk space is measured.
  public init(
    amqp: AMQPServer, renderer: MetricsRenderer, dataDirectory: String, metricsNeedAuthentication: Bool = false
  ) {
    self.amqp = amqp
    self.renderer = renderer
    self.dataDirectory = dataDirectory
    self.metricsNeedAuthentication = metricsNeedAuthentication
  }

  /// The paths served without credentials: what Prometheus and orchestrators poll.
  static let openPaths: Set<String> = ["/healthz", "/readyz", "/metrics", "/metrics/per-object", "/metrics/detailed"]
  static let metricsPaths: Set<String> = ["/metrics", "/metrics/per-object", "/metrics/detailed"]

  private func isOpen(_ path: String) -> Bool {
    Self.openPaths.contains(path) && !(self.metricsNeedAuthentication && Self.metricsPaths.contains(path))
  }

  /// The answer to one request from `remote`.
  public func respond(to request: HTTPRequestHead, from remote: SocketAddress? = nil) async -> HTTPResponse {
    guard request.method == .GET else { return HTTPResponse(status: .methodNotAllowed, body: "GET only\n") }
    let components = URLComponents(string: request.uri)
    let path = components?.percentEncodedPath ?? request.uri
    let query = components?.queryItems ?? []
    do {
      if !self.isOpen(path), let refusal = try await self.authorize(request, from: remote, path: path) {
        return refusal
      }
      switch path {
      case "/healthz":
        return HTTPResponse(body: "ok\n")
      case "/readyz":
        let (accepting, alarms) = try await self.amqp.readiness()
        if !accepting { return HTTPResponse(status: .serviceUnavailable, body: "not ready: shutting down\n") }
        if alarms.any {
          let which = [alarms.memory ? "memory" : nil, alarms.disk ? "disk" : nil].compactMap { $0 }
          return HTTPResponse(
            status: .serviceUnavailable, body: "not ready: \(which.joined(separator: " and ")) alarm in effect\n")
        }
        return HTTPResponse(body: "ready\n")
      case "/metrics":
        let snapshot = try await self.amqp.metricsSnapshot(perObject: false)
        return HTTPResponse(
          contentType: Self.prometheusContentType,
          body: self.renderer.aggregated(snapshot, process: self.process(), now: Date().timeIntervalSince1970))
      case "/metrics/per-object":
        let snapshot = try await self.amqp.metricsSnapshot(perObject: true)
        return HTTPResponse(
          contentType: Self.prometheusContentType,
          body: self.renderer.perObject(snapshot, process: self.process(), now: Date().timeIntervalSince1970))
      case "/metrics/detailed":
        let families = Set(query.filter { $0.name == "family" }.compactMap(\.value))
        let vhosts = Set(query.filter { $0.name == "vhost" }.compactMap(\.value))
        let snapshot = try await self.amqp.metricsSnapshot(perObject: true)
        return HTTPResponse(
          contentType: Self.prometheusContentType,
          body: self.renderer.detailed(snapshot, families: families, vhosts: vhosts))
      case "/api/definitions":
        let running = try await self.amqp.withBroker { WarrenConfiguration(runningTopologyOf: $0) }
        if query.contains(where: { $0.name == "format" && $0.value == "yaml" }) {
          return HTTPResponse(contentType: "application/yaml", body: try running.yaml())
        }
        return HTTPResponse(contentType: "application/json", body: try running.rabbitMQDefinitionsJSON() + "\n")
      default:
        let prefix = "/api/aliveness-test/"
        if path.hasPrefix(prefix) {
          let vhost = String(path.dropFirst(prefix.count)).removingPercentEncoding ?? ""
          if let failure = try await self.amqp.alivenessTest(vhost: vhost) {
            return .json(["status": "failed", "reason": failure], status: .serviceUnavailable)
          }
          return .json(["status": "ok"])
        }
        return .json(["error": "Object Not Found", "reason": "Not Found"], status: .notFound)
      }
    } catch {
      return HTTPResponse(status: .internalServerError, body: "\(error)\n")
    }
  }

  /// HTTP basic authentication with a broker user, as RabbitMQ's management API: nil when allowed, else the 401
  /// (no or wrong credentials) or 403 (a user without the `administrator` tag) to send.
  func authorize(_ request: HTTPRequestHead, from remote: SocketAddress?, path: String) async throws -> HTTPResponse? {
    let challenge = [("WWW-Authenticate", #"Basic realm="Warren""#)]
    let user: User
    switch try await self.amqp.authenticate(request.headers, from: remote) {
    case .missing:
      return .json(["error": "not_authorized", "reason": "Not_Authorized"], status: .unauthorized)
        .with(headers: challenge)
    case .refused:
      return .json(["error": "not_authorized", "reason": "Login failed"], status: .unauthorized)
        .with(headers: challenge)
    case .user(let found):
      user = found
    }
    if Self.metricsPaths.contains(path), user.isAdministrator || user.tags.contains("monitoring") { return nil }
    guard user.isAdministrator else {
      return .json(["error": "not_authorized", "reason": "Not administrator user"], status: .forbidden)
    }
    return nil
  }

  private func process() -> ProcessStatistics {
    ProcessStatistics.read(dataDirectory: self.dataDirectory)
  }
}

extension HTTPResponse {
  func with(headers: [(String, String)]) -> HTTPResponse {
    var response = self
    response.headers += headers
    return response
  }
}
