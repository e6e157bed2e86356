package commands

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseBinaryPages asks the kernel to page out the agent's own binary
// mappings (MADV_PAGEOUT, Linux 5.4+). The binary links Helm's SDK, whose
// packages' start-up (schemes, registries, the kubectl factory) touches
// some 40 MiB of text and data that a running agent does not use again;
// those clean, file-backed pages would otherwise stay resident until the
// kernel needs the memory. Pages still in use are faulted back in as
// needed (from the page cache). It returns the bytes advised; failures
// (an older kernel) only leave the pages where they are.
func releaseBinaryPages() int64 {
	exe, err := os.Executable()
	if err != nil {
		return 0
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue // only the binary's read-only mappings: text and rodata
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// The raw system call: the range is a mapping of our own (from
		// /proc/self/maps), not Go memory.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT); errno == 0 {
			total += int64(end - start)
		}
	}
	return total
}
