// etcd_load: a closed-loop load generator over etcd's gRPC API, the
// counterpart of `ikada bench` for side-by-side figures.
//
// N clients each keep one request in flight, sharing a few gRPC
// connections.  Puts and linearizable gets go to the leader; serializable
// ("local") gets go to the first endpoint.  Keys are bench/0 .. bench/K-1;
// gets first write every key once, unmeasured.  The output has the same
// shape as `ikada bench`: the last line is
//
//	ops=N ops_per_s=X p50_ms=X p99_ms=X p999_ms=X
//
// Built in GOPATH mode against Debian's golang-etcd-server-dev sources.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/ioutil"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
)

type options struct {
	endpoints  []string
	clients    int
	conns      int
	ops        int64
	duration   time.Duration
	valueBytes int
	mix        string
	keys       int
	timeout    time.Duration
	serverPids []int
	noPreload  bool
	via        string
	status     bool
}

func parseOptions() options {
	var o options
	var endpoints, pids string
	var durationS float64
	var timeoutMs int
	flag.StringVar(&endpoints, "endpoints",
		"127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379",
		"client URLs or HOST:PORT, comma separated")
	flag.IntVar(&o.clients, "clients", 1, "requests in flight")
	flag.IntVar(&o.conns, "connections", 4, "gRPC connections shared")
	flag.Int64Var(&o.ops, "ops", 0, "requests in all (default 1000, "+
		"or no limit with -duration-s)")
	flag.Float64Var(&durationS, "duration-s", 0, "stop sending after S s")
	flag.IntVar(&o.valueBytes, "value-bytes", 64, "value size")
	flag.StringVar(&o.mix, "mix", "put", "put, get or get-local")
	flag.IntVar(&o.keys, "keys", 1000, "keys bench/0 .. bench/K-1")
	flag.IntVar(&timeoutMs, "timeout-ms", 5000, "bound on each request")
	flag.StringVar(&pids, "server-pids", "", "PID,... whose CPU to report")
	flag.BoolVar(&o.noPreload, "no-preload", false, "gets: no preload")
	flag.StringVar(&o.via, "via", "", "the endpoint to load: leader, "+
		"follower or first (default: first for get-local, else leader)")
	flag.BoolVar(&o.status, "status", false, "print the leader's and a "+
		"follower's endpoint once a leader is known, and exit")
	flag.Parse()

	for _, e := range strings.Split(endpoints, ",") {
		if e != "" {
			o.endpoints = append(o.endpoints, e)
		}
	}
	for _, p := range strings.Split(pids, ",") {
		if n, err := strconv.Atoi(p); err == nil && n > 0 {
			o.serverPids = append(o.serverPids, n)
		}
	}
	o.duration = time.Duration(durationS * float64(time.Second))
	o.timeout = time.Duration(timeoutMs) * time.Millisecond
	if o.ops == 0 {
		if o.duration > 0 {
			o.ops = math.MaxInt64
		} else {
			o.ops = 1000
		}
	}
	if o.clients < 1 || o.conns < 1 || o.keys < 1 || len(o.endpoints) == 0 ||
		(o.mix != "put" && o.mix != "get" && o.mix != "get-local") ||
		(o.via != "" && o.via != "leader" && o.via != "follower" &&
			o.via != "first") {
		fmt.Fprintln(os.Stderr, "etcd_load: bad options (see -h)")
		os.Exit(2)
	}
	if o.conns > o.clients {
		o.conns = o.clients
	}
	if o.via == "" && o.mix == "get-local" {
		o.via = "first"
	} else if o.via == "" {
		o.via = "leader"
	}
	return o
}

// The endpoints of the current leader and of one follower, as the list
// names them.
func findLeader(o options) (string, string, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: o.endpoints, DialTimeout: o.timeout})
	if err != nil {
		return "", "", err
	}
	defer cli.Close()
	deadline := time.Now().Add(o.timeout)
	for time.Now().Before(deadline) {
		leader, follower := "", ""
		for _, e := range o.endpoints {
			ctx, cancel := context.WithTimeout(context.Background(),
				time.Second)
			st, err := cli.Status(ctx, e)
			cancel()
			if err == nil && st.Leader != 0 &&
				st.Leader == st.Header.MemberId {
				leader = e
			} else if err == nil && st.Leader != 0 {
				follower = e
			}
		}
		if leader != "" && (follower != "" || len(o.endpoints) == 1) {
			return leader, follower, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", "", fmt.Errorf("no leader within %v", o.timeout)
}

// CPU seconds of a process, from /proc/PID/stat; -1 if unreadable.
func procCPU(pid int) float64 {
	b, err := ioutil.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+1:])
	if len(f) < 13 {
		return -1
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) +
		float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

type run struct {
	o        options
	clis     []*clientv3.Client
	kvs      []pb.KVClient
	value    []byte
	mix      string
	ops      int64
	deadline time.Time
	next     int64 // requests taken so far
	errors   int64
	missing  int64
	firstErr atomic.Value
}

// One client's closed loop; returns its latencies in nanoseconds.  It
// calls the generated gRPC stubs directly: clientv3's retrying wrappers
// cost the generator more CPU than the request itself.
func (r *run) client(kv pb.KVClient, record bool) []int64 {
	var lat []int64
	for {
		n := atomic.AddInt64(&r.next, 1) - 1
		if n >= r.ops || (!r.deadline.IsZero() &&
			time.Now().After(r.deadline)) {
			return lat
		}
		key := []byte("bench/" + strconv.FormatInt(n%int64(r.o.keys), 10))
		ctx, cancel := context.WithTimeout(context.Background(),
			r.o.timeout)
		start := time.Now()
		var err error
		if r.mix == "put" {
			_, err = kv.Put(ctx, &pb.PutRequest{Key: key, Value: r.value})
		} else {
			var resp *pb.RangeResponse
			resp, err = kv.Range(ctx, &pb.RangeRequest{Key: key,
				Serializable: r.mix == "get-local"})
			if err == nil && len(resp.Kvs) == 0 {
				atomic.AddInt64(&r.missing, 1)
			}
		}
		elapsed := time.Since(start)
		cancel()
		if err != nil {
			atomic.AddInt64(&r.errors, 1)
			r.firstErr.Store(err.Error())
			continue
		}
		if record {
			lat = append(lat, int64(elapsed))
		}
	}
}

// Run every client to the end of the phase and gather the latencies.
func (r *run) phase(record bool) []int64 {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []int64
	for i := 0; i < r.o.clients; i++ {
		wg.Add(1)
		go func(kv pb.KVClient) {
			defer wg.Done()
			lat := r.client(kv, record)
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}(r.kvs[i%len(r.kvs)])
	}
	wg.Wait()
	return all
}

func quantileMs(v []int64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(v))))
	if rank < 1 {
		rank = 1
	}
	return float64(v[rank-1]) / 1e6
}

func main() {
	o := parseOptions()
	target := o.endpoints[0]
	if o.status || o.via != "first" {
		leader, follower, err := findLeader(o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd_load:", err)
			os.Exit(3)
		}
		if o.status {
			fmt.Printf("leader=%s follower=%s\n", leader, follower)
			return
		}
		target = leader
		if o.via == "follower" {
			target = follower
		}
	}
	r := &run{o: o, mix: o.mix, value: []byte(strings.Repeat("v", o.valueBytes))}
	for i := 0; i < o.conns; i++ {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints: []string{target}, DialTimeout: o.timeout})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd_load:", err)
			os.Exit(3)
		}
		defer cli.Close()
		r.clis = append(r.clis, cli)
		r.kvs = append(r.kvs, pb.NewKVClient(cli.ActiveConnection()))
	}

	if o.mix != "put" && !o.noPreload {
		r.mix, r.ops = "put", int64(o.keys)
		r.phase(false)
		r.mix, r.next = o.mix, 0
	}
	r.ops = o.ops
	before := make([]float64, len(o.serverPids))
	for i, p := range o.serverPids {
		before[i] = procCPU(p)
	}
	selfBefore := selfCPU()
	start := time.Now()
	if o.duration > 0 {
		r.deadline = start.Add(o.duration)
	}
	lat := r.phase(true)
	elapsed := time.Since(start).Seconds()
	selfCPUs := selfCPU() - selfBefore

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	done := float64(len(lat))
	perOp := 0.0
	if done > 0 {
		perOp = 1e6 / done
	}
	fmt.Printf("mix=%s clients=%d connections=%d value_bytes=%d keys=%d "+
		"target=%s\n", o.mix, o.clients, len(r.clis), o.valueBytes,
		o.keys, target)
	fmt.Printf("errors=%d missing=%d elapsed_s=%.3f\n", r.errors,
		r.missing, elapsed)
	if e := r.firstErr.Load(); e != nil {
		fmt.Printf("first_error=%s\n", e)
	}
	fmt.Printf("client_cpu_s=%.3f client_cpu_us_per_op=%.1f\n", selfCPUs,
		selfCPUs*perOp)
	if len(o.serverPids) > 0 {
		total := 0.0
		var parts []string
		for i, p := range o.serverPids {
			s := procCPU(p) - before[i]
			total += s
			parts = append(parts, fmt.Sprintf("%d:%.3f", p, s))
		}
		fmt.Printf("server_pids=%s\nserver_cpu_s=%.3f "+
			"server_cpu_us_per_op=%.1f\n", strings.Join(parts, ","),
			total, total*perOp)
	}
	fmt.Printf("ops=%d ops_per_s=%.0f p50_ms=%.3f p99_ms=%.3f "+
		"p999_ms=%.3f\n", len(lat), done/elapsed,
		quantileMs(lat, 0.5), quantileMs(lat, 0.99),
		quantileMs(lat, 0.999))
	if r.errors > 0 {
		os.Exit(3)
	}
}
