package loadtest

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// raiseUDPBuffers sets SO_RCVBUF of every UDP socket of this process (the
// clients' sockets, which server-sdk-go gives no option for) to size bytes;
// the kernel caps it at net.core.rmem_max. With the default of ~200 KB a
// client that receives 19 streams holds only ~40 ms, so a scheduling or GC
// pause of the generator would be counted as loss of the server.
// It returns how many sockets were changed.
func raiseUDPBuffers(size int) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil || typ != unix.SOCK_DGRAM {
			continue
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size) == nil {
			n++
		}
	}
	return n
}
