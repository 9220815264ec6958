package benchpeer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Command returns an exec.Cmd running bin with args, pinned to the CPU
// list cpus (taskset's syntax, "0" or "1-3") when cpus is not empty, so
// that a proxy under test and its load generator do not share a core.
func Command(ctx context.Context, cpus, bin string, args ...string) *exec.Cmd {
	if cpus == "" {
		return exec.CommandContext(ctx, bin, args...)
	}
	// taskset execs bin: the process keeps taskset's PID.
	return exec.CommandContext(ctx, "taskset", append([]string{"-c", cpus, bin}, args...)...)
}

// Proc is a peer process (HAProxy, nginx, ...) in a process group of its
// own, so that Close also ends the workers it forked.
type Proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// StartProc starts cmd as a peer named name (for errors). Its output goes
// where cmd says; the process gets SIGKILL if this process dies first.
func StartProc(name string, cmd *exec.Cmd) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the main process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// PIDs are the process and its descendants (nginx's workers), read from
// /proc now: a worker that was replaced is not counted twice.
func (p *Proc) PIDs() []int { return ProcessTree(p.PID()) }

// Exited is closed when the main process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Err is how the process ended; nil while it runs.
func (p *Proc) Err() error {
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("%s exited", p.name)
		}
		return fmt.Errorf("%s exited: %w", p.name, p.err)
	default:
		return nil
	}
}

// Close asks the process group to stop (SIGTERM), and kills it if it is
// still there after a few seconds.
func (p *Proc) Close() error {
	pgid := p.PID()
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Workers may outlive a master that exited on its own.
	syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// WaitListening waits until addr accepts TCP connections, the process
// exits, or ctx ends; a process gives no other sign that it is ready.
func (p *Proc) WaitListening(ctx context.Context, addr string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := waitListening(ctx, addr); err != nil {
		if perr := p.Err(); perr != nil {
			return perr
		}
		return fmt.Errorf("%s did not listen on %s: %w", p.name, addr, err)
	}
	return nil
}

// ProcessTree returns pid and the IDs of all its descendants, found by
// scanning /proc for parent links. A process that is gone is left out.
func ProcessTree(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(id)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], id)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const userHZ = 100

// procStat holds the fields of /proc/<pid>/stat that this package reads.
type procStat struct {
	ppid         int
	utime, stime int64 // in 1/userHZ seconds
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(b))
}

// parseStat reads /proc/<pid>/stat. The command name, in parentheses, may
// itself hold spaces and parentheses: the fields start after the last ')'.
func parseStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("benchpeer: stat without a command name")
	}
	// Fields from 3 (state) on; ppid is field 4, utime 14, stime 15.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("benchpeer: stat has %d fields after the name, want at least 13", len(f))
	}
	var st procStat
	var err error
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("benchpeer: stat ppid: %w", err)
	}
	if st.utime, err = strconv.ParseInt(f[11], 10, 64); err != nil || st.utime < 0 {
		return procStat{}, fmt.Errorf("benchpeer: stat utime %q", f[11])
	}
	if st.stime, err = strconv.ParseInt(f[12], 10, 64); err != nil || st.stime < 0 {
		return procStat{}, fmt.Errorf("benchpeer: stat stime %q", f[12])
	}
	return st, nil
}

// CPUTime sums the user and system CPU time of the processes (all their
// threads) so far. Processes that are gone count nothing, so measure a
// window by calling it before and after over the same processes.
func CPUTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		if st, err := readStat(pid); err == nil {
			ticks += st.utime + st.stime
		}
	}
	return time.Duration(ticks) * time.Second / userHZ
}

// SelfCPUTime is the user and system CPU time this process (all its
// threads) has used so far, from getrusage(2): microseconds, where
// CPUTime counts in ticks of 10 ms.
func SelfCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("benchpeer: getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// TotalRSS sums the resident set sizes of the processes. Pages that
// forked processes share are counted in each: an upper bound.
func TotalRSS(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		if v, err := RSS(pid); err == nil {
			total += v
		}
	}
	return total
}

// RSSSampler records the peak of TotalRSS over a window.
type RSSSampler struct {
	stop chan struct{}
	done chan struct{}
	peak int64
}

// SampleRSS samples TotalRSS(pids()) every interval until Stop.
func SampleRSS(pids func() []int, every time.Duration) *RSSSampler {
	s := &RSSSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.peak = max(s.peak, TotalRSS(pids()))
			select {
			case <-s.stop:
				s.peak = max(s.peak, TotalRSS(pids()))
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the peak.
func (s *RSSSampler) Stop() int64 {
	close(s.stop)
	<-s.done
	return s.peak
}

// FreePort returns a TCP port that was free on ip a moment ago.
func FreePort(ip string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// CPUBusy is the time CPU cpu has spent on anything but idling and
// waiting for I/O since boot, from /proc/stat. Over a window, its growth
// less a pinned proxy's own CPU time is what other processes took from
// that proxy's CPU: a benchmark reports it so that a reader can tell a
// quiet run from a disturbed one.
func CPUBusy(cpu int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseCPUBusy(string(b), cpu)
}

// parseCPUBusy reads the "cpuN" line of /proc/stat: user, nice, system,
// idle, iowait, irq, softirq and steal, in USER_HZ ticks (guest time is
// already part of user).
func parseCPUBusy(stat string, cpu int) (time.Duration, error) {
	name := "cpu" + strconv.Itoa(cpu)
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != name {
			continue
		}
		if len(f) < 9 {
			return 0, fmt.Errorf("benchpeer: /proc/stat %s has %d fields, want at least 9", name, len(f))
		}
		var busy int64
		for i, v := range f[1:9] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("benchpeer: /proc/stat %s field %d: %q", name, i+1, v)
			}
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			if n > math.MaxInt64/int64(time.Second)-busy {
				return 0, fmt.Errorf("benchpeer: /proc/stat %s: busy time overflows", name)
			}
			busy += n
		}
		return time.Duration(busy) * time.Second / userHZ, nil
	}
	return 0, fmt.Errorf("benchpeer: no %s in /proc/stat", name)
}
