package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// What the Recorder shares with client-go's tools/events broadcaster, so
// the agent's Events look and fold as they did when it used it.
const (
	// maxTries bounds the writes of one Event the apiserver cannot take.
	maxTries = 12
	// retryDelay is the pause between them (±25 %).
	retryDelay = 10 * time.Second
	// finishTime: a series not seen for this long is written a last time
	// and forgotten, as is a single Event this old.
	finishTime = 6 * time.Minute
	// refreshTime: every series is written again this often, so its
	// count is current and the Event outlives the apiserver's TTL.
	refreshTime = 30 * time.Minute
	// maxQueued Events wait to be written; more are dropped.
	maxQueued = 1000
	// writeTimeout bounds one request, so a stuck connection does not
	// hold up the Events behind it.
	writeTimeout = 30 * time.Second
)

// Recorder writes events.k8s.io/v1 Events. Like client-go's broadcaster,
// it folds an Event that repeats one already written (same type, reason,
// action and regarding object) into a series: the second makes the first
// a series of two, later ones only raise its count, which is written when
// the series ends (finishTime) or is refreshed (refreshTime). Events are
// written in order by Run.
type Recorder struct {
	client     *Client
	controller string
	instance   string
	log        *slog.Logger

	queue   chan *eventsv1.Event
	stopped atomic.Bool // Run has returned

	mu    sync.Mutex
	cache map[eventKey]*eventsv1.Event
}

type eventKey struct {
	eventType, reason, action string
	regarding                 corev1.ObjectReference
}

// NewRecorder returns a Recorder for Events reported by controller (the
// instance is controller-hostname, as client-go names it).
func NewRecorder(c *Client, controller string, log *slog.Logger) *Recorder {
	host, _ := os.Hostname()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{
		client: c, controller: controller, instance: controller + "-" + host, log: log,
		queue: make(chan *eventsv1.Event, maxQueued),
		cache: map[eventKey]*eventsv1.Event{},
	}
}

// Event records an Event on regarding (written once Run runs; dropped
// once it has returned). eventType is corev1.EventTypeNormal or
// corev1.EventTypeWarning.
func (r *Recorder) Event(regarding corev1.ObjectReference, eventType, reason, action, note string) {
	if r.stopped.Load() {
		return
	}
	if eventType != corev1.EventTypeNormal && eventType != corev1.EventTypeWarning {
		r.log.Error("unsupported event type", "type", eventType, "reason", reason)
		return
	}
	now := time.Now()
	ns := regarding.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault // cluster-scoped objects' Events
	}
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: eventName(regarding.Name, now), Namespace: ns},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.controller,
		ReportingInstance:   r.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           regarding,
		Note:                note,
		Type:                eventType,
	}
	key := eventKey{eventType: eventType, reason: reason, action: action, regarding: regarding}

	r.mu.Lock()
	prev := r.cache[key]
	switch {
	case prev == nil:
		r.cache[key] = ev
	case prev.Series != nil:
		prev.Series.Count++
		prev.Series.LastObservedTime = metav1.NewMicroTime(now)
		ev = nil // written when the series is refreshed or ends
	default:
		prev.Series = &eventsv1.EventSeries{Count: 2, LastObservedTime: metav1.NewMicroTime(now)}
		ev = prev
	}
	if ev != nil {
		ev = ev.DeepCopy() // the cache's copy changes under r.mu
	}
	r.mu.Unlock()
	if ev == nil {
		return
	}
	select {
	case r.queue <- ev:
	default:
		r.log.Warn("dropping an Event: too many waiting to be written", "reason", reason, "object", regarding.Name)
	}
}

// eventName is client-go's: the object's name and the time, or a random
// name when that is not a valid one.
func eventName(object string, t time.Time) string {
	name := fmt.Sprintf("%s.%x", object, t.UnixNano())
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		name = fmt.Sprintf("event.%x.%x", t.UnixNano(), rand.Uint64())
	}
	return name
}

// Run writes Events until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	defer r.stopped.Store(true)
	finish := time.NewTicker(finishTime)
	defer finish.Stop()
	refresh := time.NewTicker(refreshTime)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-r.queue:
			r.writeRetrying(ctx, ev)
		case <-finish.C:
			r.finishSeries(ctx)
		case <-refresh.C:
			r.refreshSeries(ctx)
		}
	}
}

func (r *Recorder) writeRetrying(ctx context.Context, ev *eventsv1.Event) {
	for tries := 1; ; tries++ {
		if _, retry := r.write(ctx, ev); !retry {
			return
		}
		if tries >= maxTries {
			r.log.Error("giving up writing an Event", "reason", ev.Reason, "object", ev.Regarding.Name)
			return
		}
		jitter := time.Duration(rand.Int64N(int64(retryDelay / 2)))
		t := time.NewTimer(retryDelay - retryDelay/4 + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// write creates ev, or for a series patches its count and last time (and
// creates it if it is gone). retry says whether a later try may succeed.
func (r *Recorder) write(ctx context.Context, ev *eventsv1.Event) (written *eventsv1.Event, retry bool) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	var err error
	if ev.Series != nil {
		var patch []byte
		patch, err = json.Marshal(map[string]any{"series": ev.Series})
		if err != nil {
			r.log.Error("encoding an Event series", "err", err)
			return nil, false
		}
		written, err = r.client.PatchEvent(ctx, ev.Namespace, ev.Name, patch)
	}
	if ev.Series == nil || apierrors.IsNotFound(err) {
		ev = ev.DeepCopy()
		ev.ResourceVersion = ""
		written, err = r.client.CreateEvent(ctx, ev)
	}
	if err == nil {
		return written, false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		// The apiserver refused it: it would again. A series whose Event
		// was created meanwhile is patched on the next try.
		if apierrors.IsAlreadyExists(err) && ev.Series != nil {
			return nil, true
		}
		r.log.Warn("the apiserver rejected an Event", "reason", ev.Reason, "object", ev.Regarding.Name, "err", err)
		return nil, false
	}
	r.log.Warn("writing an Event; will retry", "reason", ev.Reason, "object", ev.Regarding.Name, "err", err)
	return nil, true
}

// finishSeries writes, a last time, the series not seen for finishTime,
// and forgets them and single Events older than that.
func (r *Recorder) finishSeries(ctx context.Context) {
	cutoff := time.Now().Add(-finishTime)
	type ended struct {
		key  eventKey
		ev   *eventsv1.Event
		last time.Time
	}
	var series []ended
	r.mu.Lock()
	for k, ev := range r.cache {
		switch {
		case ev.Series != nil && ev.Series.LastObservedTime.Before(&metav1.MicroTime{Time: cutoff}):
			series = append(series, ended{k, ev.DeepCopy(), ev.Series.LastObservedTime.Time})
		case ev.Series == nil && ev.EventTime.Time.Before(cutoff):
			delete(r.cache, k)
		}
	}
	r.mu.Unlock()
	for _, s := range series {
		if _, retry := r.write(ctx, s.ev); retry {
			continue // tried again next time
		}
		r.mu.Lock()
		// Unless it repeated meanwhile: then it goes on.
		if ev := r.cache[s.key]; ev != nil && ev.Series != nil && ev.Series.LastObservedTime.Time.Equal(s.last) {
			delete(r.cache, s.key)
		}
		r.mu.Unlock()
	}
}

// refreshSeries writes every series again.
func (r *Recorder) refreshSeries(ctx context.Context) {
	var series []*eventsv1.Event
	r.mu.Lock()
	for _, ev := range r.cache {
		if ev.Series != nil {
			series = append(series, ev.DeepCopy())
		}
	}
	r.mu.Unlock()
	for _, ev := range series {
		r.write(ctx, ev)
	}
}
