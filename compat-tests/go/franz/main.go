// franz-go (kgo and kadm) against a broker, one check per run:
//
//	franz BOOTSTRAP admin|produce|group|transactions
//
// Each check creates its own topics, asserts what it reads back and prints "OK <check>: <summary>";
// a mismatch prints "FAIL <check>: <reason>" and exits 1 (compat-tests/test_go_clients.py).
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: franz BOOTSTRAP admin|produce|group|transactions")
		os.Exit(2)
	}
	bootstrap, check := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	checks := map[string]func(context.Context, string) (string, error){
		"admin": admin, "produce": produce, "group": group, "transactions": transactions,
	}
	run, known := checks[check]
	if !known {
		fmt.Fprintln(os.Stderr, "unknown check", check)
		os.Exit(2)
	}
	summary, err := run(ctx, bootstrap)
	if err != nil {
		fmt.Printf("FAIL %s: %v\n", check, err)
		os.Exit(1)
	}
	fmt.Printf("OK %s: %s\n", check, summary)
}

func unique(prefix string) string {
	return fmt.Sprintf("franz-%s-%d", prefix, time.Now().UnixNano())
}

func createTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) error {
	created, err := adm.CreateTopics(ctx, partitions, int16(replicationFactor()), configs, topic)
	if err != nil {
		return err
	}
	return created[topic].Err
}

// readAll polls `client` until `count` records arrived.
func readAll(ctx context.Context, client *kgo.Client, count int) ([]*kgo.Record, error) {
	var records []*kgo.Record
	for len(records) < count {
		fetches := client.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return records, fmt.Errorf("read %d of %d records: %w", len(records), count, err)
		}
		var fetchErr error
		fetches.EachError(func(topic string, partition int32, err error) {
			fetchErr = fmt.Errorf("fetch %s-%d: %w", topic, partition, err)
		})
		if fetchErr != nil {
			return records, fetchErr
		}
		records = append(records, fetches.Records()...)
	}
	return records, nil
}

func admin(ctx context.Context, bootstrap string) (string, error) {
	client, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...))
	if err != nil {
		return "", err
	}
	defer client.Close()
	adm := kadm.NewClient(client)

	metadata, err := adm.Metadata(ctx)
	if err != nil {
		return "", err
	}
	if metadata.Cluster == "" || len(metadata.Brokers) != replicationFactor() { // one broker per replica
		return "", fmt.Errorf("cluster %q with %d brokers", metadata.Cluster, len(metadata.Brokers))
	}
	topic := unique("admin")
	if err := createTopic(ctx, adm, topic, 2, map[string]*string{"retention.ms": kadm.StringPtr("3600000")}); err != nil {
		return "", err
	}
	// Named: kadm answers an unnamed listing from the client's metadata cache, taken before the topic existed.
	topics, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return "", err
	}
	if len(topics[topic].Partitions) != 2 {
		return "", fmt.Errorf("listed partitions %d: %+v", len(topics[topic].Partitions), topics[topic])
	}
	altered, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")}}, topic)
	if err != nil {
		return "", err
	}
	for _, response := range altered {
		if response.Err != nil {
			return "", response.Err
		}
	}
	described, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return "", err
	}
	config, err := described.On(topic, nil)
	if err != nil {
		return "", err
	}
	retention := ""
	for _, entry := range config.Configs {
		if entry.Key == "retention.ms" {
			retention = entry.MaybeValue()
		}
	}
	if retention != "7200000" {
		return "", fmt.Errorf("retention.ms %q after AlterTopicConfigs", retention)
	}
	if _, err := adm.UpdatePartitions(ctx, 3, topic); err != nil {
		return "", err
	}
	topics, err = adm.ListTopics(ctx, topic)
	if err != nil || len(topics[topic].Partitions) != 3 {
		return "", fmt.Errorf("partitions after UpdatePartitions: %d (%v)", len(topics[topic].Partitions), err)
	}

	group := unique("admin-group")
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: 0, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, group, offsets); err != nil {
		return "", err
	}
	fetched, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return "", err
	}
	if offset, ok := fetched.Lookup(topic, 0); !ok || offset.At != 0 {
		return "", fmt.Errorf("fetched offset %+v", offset)
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		return "", err
	}
	if _, ok := groups[group]; !ok {
		return "", fmt.Errorf("group %s not listed", group)
	}
	if _, err := adm.DeleteGroups(ctx, group); err != nil {
		return "", err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return "", err
	}
	if end, ok := ends.Lookup(topic, 0); !ok || end.Offset != 0 {
		return "", fmt.Errorf("end offset %+v", end)
	}
	deleted, err := adm.DeleteTopics(ctx, topic)
	if err != nil || deleted[topic].Err != nil {
		return "", fmt.Errorf("delete: %v %v", err, deleted[topic].Err)
	}
	return "cluster " + metadata.Cluster + ", topic created/listed/altered/extended/deleted, group offsets", nil
}

var codecs = []struct {
	name  string
	codec kgo.CompressionCodec
}{
	{"none", kgo.NoCompression()}, {"gzip", kgo.GzipCompression()}, {"snappy", kgo.SnappyCompression()},
	{"lz4", kgo.Lz4Compression()}, {"zstd", kgo.ZstdCompression()},
}

func produce(ctx context.Context, bootstrap string) (string, error) {
	setup, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...))
	if err != nil {
		return "", err
	}
	defer setup.Close()
	topic := unique("produce")
	if err := createTopic(ctx, kadm.NewClient(setup), topic, 1, nil); err != nil {
		return "", err
	}
	var expected []string
	for _, c := range codecs { // idempotent by default, acks=all
		producer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.ProducerBatchCompression(c.codec))
		if err != nil {
			return "", err
		}
		var produceErr error
		for i := 0; i < 2000; i++ {
			value := fmt.Sprintf("%s-%d", c.name, i)
			expected = append(expected, value)
			record := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("key-%d", i)), Value: []byte(value),
				Headers: []kgo.RecordHeader{{Key: "codec", Value: []byte(c.name)}}}
			producer.Produce(ctx, record, func(_ *kgo.Record, err error) {
				if err != nil {
					produceErr = err
				}
			})
		}
		err = producer.Flush(ctx)
		producer.Close()
		if err != nil || produceErr != nil {
			return "", fmt.Errorf("%s: %v %v", c.name, err, produceErr)
		}
	}
	consumer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return "", err
	}
	defer consumer.Close()
	records, err := readAll(ctx, consumer, len(expected))
	if err != nil {
		return "", err
	}
	for i, record := range records[:len(expected)] {
		codec := strings.SplitN(expected[i], "-", 2)[0]
		if record.Offset != int64(i) || string(record.Value) != expected[i] || len(record.Headers) != 1 ||
			string(record.Headers[0].Value) != codec {
			return "", fmt.Errorf("record %d: offset %d value %q headers %v", i, record.Offset, record.Value, record.Headers)
		}
	}
	return fmt.Sprintf("%d records, none/gzip/snappy/lz4/zstd, read back in order", len(expected)), nil
}

func group(ctx context.Context, bootstrap string) (string, error) {
	setup, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...))
	if err != nil {
		return "", err
	}
	defer setup.Close()
	adm := kadm.NewClient(setup)
	topic := unique("group")
	producer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return "", err
	}
	defer producer.Close()
	if err := createTopic(ctx, adm, topic, 3, nil); err != nil {
		return "", err
	}
	const perPartition = 200
	for partition := int32(0); partition < 3; partition++ {
		for i := 0; i < perPartition; i++ {
			record := &kgo.Record{Topic: topic, Partition: partition, Value: []byte(fmt.Sprintf("%d:%d", partition, i))}
			producer.Produce(ctx, record, nil)
		}
	}
	if err := producer.Flush(ctx); err != nil {
		return "", err
	}
	name := unique("group-id")
	consumer, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.ConsumerGroup(name), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return "", err
	}
	records, err := readAll(ctx, consumer, 3*perPartition)
	if err != nil {
		consumer.Close()
		return "", err
	}
	seen := map[string]bool{}
	for _, record := range records {
		seen[string(record.Value)] = true
	}
	if len(seen) != 3*perPartition || len(records) != 3*perPartition {
		consumer.Close()
		return "", fmt.Errorf("%d records, %d distinct", len(records), len(seen))
	}
	err = consumer.CommitUncommittedOffsets(ctx)
	consumer.Close() // leaves the group
	if err != nil {
		return "", err
	}
	fetched, err := adm.FetchOffsets(ctx, name)
	if err != nil {
		return "", err
	}
	for partition := int32(0); partition < 3; partition++ {
		if offset, ok := fetched.Lookup(topic, partition); !ok || offset.At != perPartition {
			return "", fmt.Errorf("committed offset of partition %d: %+v", partition, offset)
		}
	}
	return fmt.Sprintf("%d records over 3 partitions in a group, committed", len(records)), nil
}

func transactions(ctx context.Context, bootstrap string) (string, error) {
	setup, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...))
	if err != nil {
		return "", err
	}
	defer setup.Close()
	adm := kadm.NewClient(setup)
	input, output := unique("txn-in"), unique("txn-out")
	for _, topic := range []string{input, output} {
		if err := createTopic(ctx, adm, topic, 1, nil); err != nil {
			return "", err
		}
	}
	const count = 300
	for i := 0; i < count; i++ {
		setup.Produce(ctx, &kgo.Record{Topic: input, Value: []byte(fmt.Sprintf("record-%d", i))}, nil)
	}
	if err := setup.Flush(ctx); err != nil {
		return "", err
	}

	// An aborted transaction on the output topic first: a read_committed reader must never see it.
	aborter, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.TransactionalID(unique("txn-aborted")))
	if err != nil {
		return "", err
	}
	if err := aborter.BeginTransaction(); err != nil {
		return "", err
	}
	aborter.Produce(ctx, &kgo.Record{Topic: output, Value: []byte("ABORTED")}, nil)
	if err := aborter.Flush(ctx); err != nil {
		return "", err
	}
	if err := aborter.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return "", err
	}
	aborter.Close()

	groupID := unique("txn-group")
	session, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.TransactionalID(unique("txn-id")),
		kgo.ConsumerGroup(groupID), kgo.ConsumeTopics(input), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RequireStableFetchOffsets())
	if err != nil {
		return "", err
	}
	defer session.Close()
	transformed, committedTransactions := 0, 0
	for transformed < count {
		fetches := session.PollRecords(ctx, 50) // several transactions
		if ctx.Err() != nil {
			return "", fmt.Errorf("transformed %d of %d: %w", transformed, count, ctx.Err())
		}
		records := fetches.Records()
		if len(records) == 0 {
			continue
		}
		if err := session.Begin(); err != nil {
			return "", err
		}
		for _, record := range records {
			session.Produce(ctx, &kgo.Record{Topic: output, Value: []byte(strings.ToUpper(string(record.Value)))}, nil)
		}
		committed, err := session.End(ctx, kgo.TryCommit)
		if err != nil {
			return "", err
		}
		if committed {
			transformed += len(records)
			committedTransactions++
		}
	}

	reader, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{output: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return "", err
	}
	defer reader.Close()
	records, err := readAll(ctx, reader, count)
	if err != nil {
		return "", err
	}
	for i, record := range records {
		if want := fmt.Sprintf("RECORD-%d", i); string(record.Value) != want {
			return "", fmt.Errorf("read_committed record %d is %q, want %q", i, record.Value, want)
		}
	}
	fetched, err := adm.FetchOffsets(ctx, groupID)
	if err != nil {
		return "", err
	}
	if offset, ok := fetched.Lookup(input, 0); !ok || offset.At != count {
		return "", fmt.Errorf("group offset %+v", offset)
	}
	return fmt.Sprintf("%d records through %d GroupTransactSession transactions, an aborted one, read_committed exact, offsets committed with the output",
		count, committedTransactions), nil
}

// replicationFactor is how many replicas the topics created here get: 3 against a cluster
// (LODESTREAM_COMPAT_REPLICATION_FACTOR, set by compat-tests/conftest.py), else 1.
func replicationFactor() int {
	if value, err := strconv.Atoi(os.Getenv("LODESTREAM_COMPAT_REPLICATION_FACTOR")); err == nil && value > 0 {
		return value
	}
	return 1
}
