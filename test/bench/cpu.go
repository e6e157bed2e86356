package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// cpuUse is where the machine's CPU time went over a phase: how busy all
// CPUs were, and the seconds of the control plane's processes and of the
// agent. It says what bounds a throughput figure: a phase with the
// machine near 100 % busy is bound by CPU, and the split says whose.
type cpuUse struct {
	Busy                float64 `json:"machine_busy"` // fraction of all CPUs' time
	ControlPlaneSeconds float64 `json:"control_plane_cpu_seconds"`
	AgentSeconds        float64 `json:"agent_cpu_seconds,omitempty"`
	// ByProcess splits ControlPlaneSeconds by process name.
	ByProcess map[string]float64 `json:"control_plane_cpu_seconds_by_process,omitempty"`
}

// cpuMark is the counters at the start of a phase.
type cpuMark struct {
	busy, total float64
	procs       map[int]float64
}

// markCPU reads the counters of the machine and of pids.
func markCPU(pids []int) cpuMark {
	m := cpuMark{procs: map[int]float64{}}
	m.busy, m.total = machineTicks()
	for _, p := range pids {
		m.procs[p], _ = procCPU(p) // a process that is gone counts 0
	}
	return m
}

// since returns the use from m to now; agent is the agent's pid (0: none).
func (m cpuMark) since(agent int) cpuUse {
	busy, total := machineTicks()
	var u cpuUse
	if total > m.total {
		u.Busy = (busy - m.busy) / (total - m.total)
	}
	for p, start := range m.procs {
		now, _ := procCPU(p)
		d := now - start
		if p == agent {
			u.AgentSeconds = d
			continue
		}
		u.ControlPlaneSeconds += d
		if u.ByProcess == nil {
			u.ByProcess = map[string]float64{}
		}
		u.ByProcess[procName(p)] += d
	}
	return u
}

// machineTicks reads the busy and total ticks of all CPUs from /proc/stat.
func machineTicks() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	for i, s := range f[1:] {
		if i >= 8 {
			break // guest time is already counted in user
		}
		v, _ := strconv.ParseFloat(s, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// procCPU returns the CPU seconds (user and system) a process has used.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, nil // USER_HZ
}

// procName is a process's command name (/proc/PID/comm, at most 15
// characters: "kube-apiserver", "kube-controller").
func procName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return strconv.Itoa(pid)
	}
	return strings.TrimSpace(string(b))
}

// split prints ByProcess, largest first.
func (u cpuUse) split() string {
	names := make([]string, 0, len(u.ByProcess))
	for n := range u.ByProcess {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return u.ByProcess[names[i]] > u.ByProcess[names[j]] })
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f s", n, u.ByProcess[n]))
	}
	return strings.Join(parts, ", ")
}
