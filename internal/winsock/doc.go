// Package winsock serves and hands over listening TCP sockets and UDP sockets
// on Windows with raw Winsock calls, so that a running process can pass its
// sockets to the process replacing it without refusing a connection or
// losing a datagram.
//
// Why not the standard library: net.Listen associates the socket with the
// runtime's I/O completion port, and every duplicate of a socket (in any
// process) shares that association, so completions of the new process's
// accepts would be queued to the old process's port. net.FileListener needs
// NtSetInformationFile(FileReplaceCompletionInformation), which Wine lacks.
//
// The mechanism (see shared notes on Windows handoff):
//
//   - Listen creates the socket with SO_EXCLUSIVEADDRUSE and never puts it on
//     an IOCP.
//   - The old process calls Duplicate(l.Socket(), newPID) and sends the bytes to
//     the new process, which calls ListenerFromProtocolInfo.
//   - Listener.Accept uses AcceptEx completed through an event whose handle has
//     its low bit set, so no completion packet is queued to any IOCP; Close
//     cancels the pending AcceptEx (closesocket alone does not while another
//     process holds a copy) and still returns a connection that completed at
//     the same moment.
//   - Accepted connections are *os.File-backed (a DuplicateHandle copy of the
//     SOCKET), so reads and writes use the runtime's IOCP and deadlines work.
//   - UDP: ListenPacket and PacketConnFromProtocolInfo give a PacketConn whose
//     ReadFrom and WriteTo use overlapped WSARecvFrom and WSASendTo completed
//     through low-bit events too, with deadlines of their own. The old
//     process stops reading with SetReadDeadline(time.Now()) once the new one
//     reads: queued datagrams go to the new process's reads, and a datagram
//     that completed during the cancellation is still returned (answer it).
//     Go's own UDP sockets are on the runtime's IOCP and cannot be shared.
//
// The package is empty on other operating systems.
package winsock
