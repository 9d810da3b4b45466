import Foundation
import NIOCore
import NIOHTTP1
import WarrenCore
import WarrenServer

/// What HTTP basic authentication of a request found (both HTTP ports use it).
public enum BasicAuthentication: Sendable {
  /// No usable `Authorization: Basic` header.
  case missing
  /// The credentials match no user (or a loopback-only user from elsewhere).
  case refused
  /// The user the credentials name.
  case user(User)
}

extension AMQPServer {
  /// Checks a request's basic credentials against the broker's users, in one hop to its loop.
  public func authenticate(_ headers: HTTPHeaders, from remote: SocketAddress?) async throws -> BasicAuthentication {
    guard let header = headers.first(name: "Authorization"), header.lowercased().hasPrefix("basic "),
      let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
      let credentials = String(data: decoded, encoding: .utf8), let colon = credentials.firstIndex(of: ":")
    else { return .missing }
    let name = String(credentials[..<colon])
    let password = String(credentials[credentials.index(after: colon)...])
    let loopback = User.isLoopback(address: remote?.ipAddress ?? "")
    let user = try await self.withBroker { $0.authenticate(user: name, password: password, fromLoopback: loopback) }
    return user.map { .user($0) } ?? .refused
  }
}
