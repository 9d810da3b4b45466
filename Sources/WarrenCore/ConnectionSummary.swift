/// One client connection as the broker reports it (inspection, metrics).
public struct ConnectionSummary: Sendable, Equatable {
  public var vhost: String
  /// RabbitMQ's connection name: "peer -> listener".
  public var name: String
  public var user: String
  public var channels: Int
  public var bytesReceived: Int
  public var bytesSent: Int

  public init(vhost: String, name: String, user: String, channels: Int, bytesReceived: Int, bytesSent: Int) {
    self.vhost = vhost
    self.name = name
    self.user = user
    self.channels = channels
    self.bytesReceived = bytesReceived
    self.bytesSent = bytesSent
  }
}
