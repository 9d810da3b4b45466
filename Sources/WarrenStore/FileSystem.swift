#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// What the store needs of a file system: append-only files that are synced on purpose. The real one is POSIX;
/// tests use ``SimulatedFileSystem``, which loses every byte not yet synced at a simulated power cut and fails
/// writes or syncs on demand.
public protocol StoreFileSystem: AnyObject {
  /// Opens a file for appending and reading, creating it when asked.
  func open(_ path: String, create: Bool) throws(StoreError) -> any StoreFile
  /// Opens an existing file to be written again from its start: `size` starts at 0 and appends overwrite; the
  /// bytes past what is written are the file's old ones (a power cut may also bring back old bytes not yet
  /// overwritten durably). Overwriting blocks already allocated makes `fdatasync` cheaper than appending.
  func openForReuse(_ path: String) throws(StoreError) -> any StoreFile
  /// The names of the files in a directory.
  func list(_ directory: String) throws(StoreError) -> [String]
  /// Deletes a file.
  func remove(_ path: String) throws(StoreError)
  /// Creates a directory (and its parents) if it does not exist.
  func createDirectory(_ path: String) throws(StoreError)
  /// Makes a directory's entries durable (a new or renamed file survives a power cut).
  func syncDirectory(_ path: String) throws(StoreError)
  /// Renames a file, replacing the target (atomic on POSIX).
  func rename(_ from: String, to: String) throws(StoreError)
}

/// One open file of the store.
public protocol StoreFile: AnyObject {
  /// Its length in bytes, written or not yet synced.
  var size: Int { get }
  /// Appends bytes at the end.
  func append(_ bytes: UnsafeRawBufferPointer) throws(StoreError)
  /// Reads `count` bytes at `offset` (fewer at the end of the file).
  func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8]
  /// Makes every byte written so far durable (`fdatasync`).
  func sync() throws(StoreError)
  /// ``sync()`` through the file description of sync slot `slot` (0 or 1): two batches may sync one file at once,
  /// and a write-back error must reach each of them (Linux reports it once per file description).
  func sync(slot: Int) throws(StoreError)
  /// Cuts the file at `size` (a torn tail found by recovery), durably.
  func truncate(to size: Int) throws(StoreError)
  /// Closes the file.
  func close()
}

extension StoreFile {
  public func sync(slot: Int) throws(StoreError) { try self.sync() }

  /// Appends an array's bytes.
  public func append(bytes: [UInt8]) throws(StoreError) {
    var failure: StoreError?
    bytes.withUnsafeBytes { buffer in
      do throws(StoreError) { try self.append(buffer) } catch { failure = error }
    }
    if let failure { throw failure }
  }
}

/// An I/O error of the store, with the operation and the system's error number.
public struct StoreError: Error, Equatable, CustomStringConvertible {
  public var operation: String
  public var path: String
  public var errno: Int32

  public init(operation: String, path: String, errno: Int32) {
    self.operation = operation
    self.path = path
    self.errno = errno
  }

  public var description: String {
    "\(self.operation) \(self.path): \(String(cString: strerror(self.errno)))"
  }
}

/// The real file system, through POSIX calls.
public final class POSIXFileSystem: StoreFileSystem {
  public init() {}

  public func open(_ path: String, create: Bool) throws(StoreError) -> any StoreFile {
    let flags = O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0)
    let fd = Glibc.open(path, flags, 0o640)
    guard fd >= 0 else { throw StoreError(operation: "open", path: path, errno: errno) }
    var status = stat()
    guard fstat(fd, &status) == 0 else {
      let error = errno
      _ = Glibc.close(fd)
      throw StoreError(operation: "stat", path: path, errno: error)
    }
    return POSIXFile(fd: fd, path: path, size: Int(status.st_size))
  }

  public func openForReuse(_ path: String) throws(StoreError) -> any StoreFile {
    let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { throw StoreError(operation: "open", path: path, errno: errno) }
    return POSIXFile(fd: fd, path: path, size: 0, positioned: true)
  }

  public func list(_ directory: String) throws(StoreError) -> [String] {
    guard let handle = opendir(directory) else { throw StoreError(operation: "list", path: directory, errno: errno) }
    defer { closedir(handle) }
    var names: [String] = []
    while let entry = readdir(handle) {
      let name = withUnsafePointer(to: entry.pointee.d_name) {
        $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
  }

  public func remove(_ path: String) throws(StoreError) {
    guard unlink(path) == 0 else { throw StoreError(operation: "remove", path: path, errno: errno) }
  }

  public func createDirectory(_ path: String) throws(StoreError) {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
      prefix += component + "/"
      if mkdir(prefix, 0o750) != 0 && errno != EEXIST {
        throw StoreError(operation: "mkdir", path: prefix, errno: errno)
      }
    }
  }

  public func syncDirectory(_ path: String) throws(StoreError) {
    let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw StoreError(operation: "open", path: path, errno: errno) }
    defer { _ = Glibc.close(fd) }
    guard fsync(fd) == 0 else { throw StoreError(operation: "fsync", path: path, errno: errno) }
  }

  public func rename(_ from: String, to: String) throws(StoreError) {
    guard Glibc.rename(from, to) == 0 else { throw StoreError(operation: "rename", path: from, errno: errno) }
  }
}

final class POSIXFile: StoreFile {
  let fd: Int32
  let path: String
  private(set) var size: Int
  /// Opened without O_APPEND: appends are written at `size` (a reused file).
  let positioned: Bool
  /// A second description of the file, opened with it, for sync slot 1 (-1 if it could not be opened: slot 1 then
  /// syncs through `fd`).
  let secondFD: Int32

  init(fd: Int32, path: String, size: Int, positioned: Bool = false) {
    self.fd = fd
    self.path = path
    self.size = size
    self.positioned = positioned
    self.secondFD = Glibc.open(path, O_RDONLY | O_CLOEXEC)
  }

  func append(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
    var done = 0
    while done < bytes.count {
      let n =
        self.positioned
        ? pwrite(self.fd, bytes.baseAddress! + done, bytes.count - done, off_t(self.size + done))
        : write(self.fd, bytes.baseAddress! + done, bytes.count - done)
      if n < 0 {
        if errno == EINTR { continue }
        throw StoreError(operation: "write", path: self.path, errno: errno)
      }
      done += n
    }
    self.size += bytes.count
  }

  func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8] {
    var result = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
      let n = result.withUnsafeMutableBytes {
        pread(self.fd, $0.baseAddress! + done, count - done, off_t(offset + done))
      }
      if n < 0 {
        if errno == EINTR { continue }
        throw StoreError(operation: "read", path: self.path, errno: errno)
      }
      if n == 0 { break }
      done += n
    }
    return Array(result.prefix(done))
  }

  func sync() throws(StoreError) {
    guard fdatasync(self.fd) == 0 else { throw StoreError(operation: "fdatasync", path: self.path, errno: errno) }
  }

  func sync(slot: Int) throws(StoreError) {
    let fd = slot == 1 && self.secondFD >= 0 ? self.secondFD : self.fd
    guard fdatasync(fd) == 0 else { throw StoreError(operation: "fdatasync", path: self.path, errno: errno) }
  }

  func truncate(to size: Int) throws(StoreError) {
    guard ftruncate(self.fd, off_t(size)) == 0 else {
      throw StoreError(operation: "truncate", path: self.path, errno: errno)
    }
    self.size = size
    try self.sync()
  }

  func close() {
    _ = Glibc.close(self.fd)
    if self.secondFD >= 0 { _ = Glibc.close(self.secondFD) }
  }
}

/// A file system in memory that keeps, for each file, what was synced apart from what was only written: a
/// simulated power cut (``powerCut()``) drops every byte not synced. Writes and syncs can be made to fail (ENOSPC,
/// EIO) to test how the store answers.
public final class SimulatedFileSystem: StoreFileSystem {
  final class Contents {
    var durable: [UInt8] = []
    var written: [UInt8] = []
  }

  private var files: [String: Contents] = [:]
  private var directories: Set<String> = []
  /// When set, the next writes fail with this errno.
  public var failWrites: Int32?
  /// When set, the next syncs fail with this errno.
  public var failSyncs: Int32?

  public init() {}

  /// The power goes: every file keeps only what was synced.
  /// Files in `written` keep their unsynced bytes too (the kernel wrote them back before the power went).
  public func powerCut(keepingUnsyncedOf written: Set<String> = []) {
    for (path, contents) in self.files where !written.contains(path) { contents.written = contents.durable }
  }

  /// A file's bytes as the store sees them (written, synced or not).
  public func bytes(of path: String) -> [UInt8] { self.files[path]?.written ?? [] }

  /// Replaces a file's bytes, durably (to corrupt or truncate it in a test).
  public func setBytes(_ bytes: [UInt8], of path: String) {
    let contents = self.files[path] ?? Contents()
    contents.written = bytes
    contents.durable = bytes
    self.files[path] = contents
  }

  public func open(_ path: String, create: Bool) throws(StoreError) -> any StoreFile {
    if self.files[path] == nil {
      guard create else { throw StoreError(operation: "open", path: path, errno: ENOENT) }
      self.files[path] = Contents()
    }
    return SimulatedFile(system: self, path: path, contents: self.files[path]!)
  }

  public func openForReuse(_ path: String) throws(StoreError) -> any StoreFile {
    guard let contents = self.files[path] else { throw StoreError(operation: "open", path: path, errno: ENOENT) }
    let file = SimulatedFile(system: self, path: path, contents: contents)
    file.overwriteEnd = 0
    return file
  }

  public func list(_ directory: String) throws(StoreError) -> [String] {
    let prefix = directory.hasSuffix("/") ? directory : directory + "/"
    return self.files.keys.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
      .map { String($0.dropFirst(prefix.count)) }.sorted()
  }

  public func remove(_ path: String) throws(StoreError) {
    guard self.files.removeValue(forKey: path) != nil else {
      throw StoreError(operation: "remove", path: path, errno: ENOENT)
    }
  }

  public func createDirectory(_ path: String) throws(StoreError) {
    self.directories.insert(path)
  }

  public func syncDirectory(_ path: String) throws(StoreError) {
    if let error = self.failSyncs { throw StoreError(operation: "fsync", path: path, errno: error) }
  }

  /// Renames are durable at once here (the store syncs the directory after each one anyway).
  public func rename(_ from: String, to: String) throws(StoreError) {
    guard let contents = self.files.removeValue(forKey: from) else {
      throw StoreError(operation: "rename", path: from, errno: ENOENT)
    }
    self.files[to] = contents
  }

  final class SimulatedFile: StoreFile {
    let system: SimulatedFileSystem
    let path: String
    let contents: Contents

    init(system: SimulatedFileSystem, path: String, contents: Contents) {
      self.system = system
      self.path = path
      self.contents = contents
    }

    /// Where the next append goes in a reused file (nil: at the end).
    var overwriteEnd: Int?

    var size: Int { self.overwriteEnd ?? self.contents.written.count }

    func append(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
      if let error = self.system.failWrites { throw StoreError(operation: "write", path: self.path, errno: error) }
      guard let end = self.overwriteEnd else {
        self.contents.written.append(contentsOf: bytes)
        return
      }
      let overlap = min(bytes.count, max(0, self.contents.written.count - end))
      self.contents.written.replaceSubrange(end..<(end + overlap), with: bytes)
      self.overwriteEnd = end + bytes.count
    }

    func read(at offset: Int, count: Int) throws(StoreError) -> [UInt8] {
      let bytes = self.contents.written
      guard offset < bytes.count else { return [] }
      return Array(bytes[offset..<min(bytes.count, offset + count)])
    }

    func sync() throws(StoreError) {
      if let error = self.system.failSyncs { throw StoreError(operation: "fdatasync", path: self.path, errno: error) }
      self.contents.durable = self.contents.written
    }

    func truncate(to size: Int) throws(StoreError) {
      self.contents.written = Array(self.contents.written.prefix(size))
      if self.overwriteEnd != nil { self.overwriteEnd = size }
      try self.sync()
    }

    func close() {}
  }
}
