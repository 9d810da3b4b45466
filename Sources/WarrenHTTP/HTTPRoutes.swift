import Foundation
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

  static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

  /// Routes for a broker; `dataDirectory` is where free disk space is measured.
  public init(amqp: AMQPServer, renderer: MetricsRenderer, dataDirectory: String) {
    self.amqp = amqp
    self.renderer = renderer
    self.dataDirectory = dataDirectory
  }

  /// The answer to one request.
  public func respond(to request: HTTPRequestHead) async -> HTTPResponse {
    guard request.method == .GET else { return HTTPResponse(status: .methodNotAllowed, body: "GET only\n") }
    let components = URLComponents(string: request.uri)
    let path = components?.percentEncodedPath ?? request.uri
    let query = components?.queryItems ?? []
    do {
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
            return HTTPResponse(
              status: .serviceUnavailable, contentType: "application/json",
              body: #"{"status":"failed","reason":"\#(failure)"}"# + "\n")
          }
          return HTTPResponse(contentType: "application/json", body: #"{"status":"ok"}"# + "\n")
        }
        return HTTPResponse(status: .notFound, body: "not found: \(path)\n")
      }
    } catch {
      return HTTPResponse(status: .internalServerError, body: "\(error)\n")
    }
  }

  private func process() -> ProcessStatistics {
    ProcessStatistics.read(dataDirectory: self.dataDirectory)
  }
}
