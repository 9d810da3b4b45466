/// What a TLS layer in front of a connection tells the AMQP handler once its handshake is done (a user inbound
/// event, fired before any AMQP bytes): the version and, when a client certificate was verified, the user name it
/// gives (EXTERNAL is then offered).
public struct TLSConnectionEstablished: Sendable, Equatable {
  /// RabbitMQ's spelling: `tlsv1.2`, `tlsv1.3`.
  public var protocolVersion: String
  /// The user name from a verified client certificate (its common name or subject alternative name).
  public var certificateUser: String?

  public init(protocolVersion: String, certificateUser: String?) {
    self.protocolVersion = protocolVersion
    self.certificateUser = certificateUser
  }
}
