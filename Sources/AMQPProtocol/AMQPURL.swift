/// The parts of an AMQP URL: `amqp://user:password@host:port/vhost` (or `amqps://` for TLS), percent-decoded (`%2F`
/// is `/`); what is left out is guest, guest, 127.0.0.1, 5672 (5671 for amqps) and `/`.
public struct AMQPURL: Sendable, Equatable {
  public var host = "127.0.0.1"
  public var port = 5672
  public var username = "guest"
  public var password = "guest"
  public var virtualHost = "/"
  /// `amqps://`: over TLS.
  public var tls = false

  /// Parses a URL; nil when it is not an `amqp://` or `amqps://` URL.
  public init?(_ url: String) {
    var rest: Substring
    if url.hasPrefix("amqp://") {
      rest = Substring(url.dropFirst("amqp://".count))
    } else if url.hasPrefix("amqps://") {
      rest = Substring(url.dropFirst("amqps://".count))
      self.tls = true
      self.port = 5671
    } else {
      return nil
    }
    if let at = rest.lastIndex(of: "@") {
      let credentials = rest[..<at]
      rest = rest[rest.index(after: at)...]
      if let colon = credentials.firstIndex(of: ":") {
        self.username = Self.decode(credentials[..<colon])
        self.password = Self.decode(credentials[credentials.index(after: colon)...])
      } else {
        self.username = Self.decode(credentials)
      }
    }
    var hostPort = rest
    if let slash = rest.firstIndex(of: "/") {
      hostPort = rest[..<slash]
      let vhost = rest[rest.index(after: slash)...]
      if !vhost.isEmpty { self.virtualHost = Self.decode(vhost) }
    }
    if let colon = hostPort.lastIndex(of: ":") {
      self.host = String(hostPort[..<colon])
      guard let port = Int(hostPort[hostPort.index(after: colon)...]) else { return nil }
      self.port = port
    } else if !hostPort.isEmpty {
      self.host = String(hostPort)
    }
  }

  /// Percent-decoding (`%2F` is `/`).
  static func decode(_ text: Substring) -> String {
    var bytes: [UInt8] = []
    var i = text.utf8.startIndex
    let utf8 = text.utf8
    while i < utf8.endIndex {
      let byte = utf8[i]
      if byte == UInt8(ascii: "%"), let h = utf8.index(i, offsetBy: 2, limitedBy: utf8.endIndex), h < utf8.endIndex,
        let value = UInt8(String(decoding: utf8[utf8.index(after: i)...h], as: UTF8.self), radix: 16)
      {
        bytes.append(value)
        i = utf8.index(after: h)
      } else {
        bytes.append(byte)
        i = utf8.index(after: i)
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}
