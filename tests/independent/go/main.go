// Command verify checks an audit log written by the gateway's notary with implementations we did not write:
// golang.org/x/mod/sumdb/note opens the signed checkpoints (Ed25519 signer, and cosigners through a
// note.Verifier for c2sp.org/tlog-cosignature written here from that spec), and golang.org/x/mod/sumdb/tlog
// reads the C2SP tlog-tiles directory, recomputes the tree hash, and checks inclusion and consistency proofs.
//
// It only reads files; it shares no code with the gateway (tests/independent/test_go_verifier.py builds
// and runs it). Inputs:
//
//	-log DIR            the log directory (tile/..., checkpoint)
//	-origin ORIGIN      the log's origin (first line of its checkpoints)
//	-vkey FILE          the notary's verifier key (signed-note vkey, type 0x01)
//	-cosigner FILE      a cosigner's verifier key (type 0x04); repeatable; every one must have cosigned
//	-old FILE           an older checkpoint note of the same log
//	-consistency FILE   a tlog-witness add-checkpoint body (old N, proof lines, blank line, note) from -old
//	                    to the log's checkpoint
//	-receipt FILE       a c2sp.org/tlog-proof@v1 receipt whose extra line carries the entry; repeatable
//
// On success it prints one JSON object with what it checked and exits 0; on the first failure it prints the
// reason to stderr and exits 1.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(1)
	}
}

type report struct {
	Origin              string   `json:"origin"`
	Size                int64    `json:"size"`
	Root                string   `json:"root"`
	Signers             []string `json:"signers"`
	EntriesChecked      int64    `json:"entries_checked"`
	ReceiptsChecked     []int64  `json:"receipts_checked"`
	ConsistencyFrom     int64    `json:"consistency_from"`
	ConsistencySameAsGo bool     `json:"consistency_proof_equals_tlog_prove_tree"`
}

func run() error {
	var (
		logDir, origin, vkeyFile, oldFile, consistencyFile string
		cosigners, receipts                                multiFlag
	)
	flag.StringVar(&logDir, "log", "", "log directory")
	flag.StringVar(&origin, "origin", "", "log origin")
	flag.StringVar(&vkeyFile, "vkey", "", "notary verifier key file")
	flag.Var(&cosigners, "cosigner", "cosigner verifier key file (repeatable)")
	flag.StringVar(&oldFile, "old", "", "older checkpoint note")
	flag.StringVar(&consistencyFile, "consistency", "", "add-checkpoint body from -old to the current checkpoint")
	flag.Var(&receipts, "receipt", "tlog-proof@v1 receipt (repeatable)")
	flag.Parse()
	if logDir == "" || origin == "" || vkeyFile == "" {
		return errors.New("-log, -origin and -vkey are required")
	}

	notary, err := note.NewVerifier(readLine(vkeyFile))
	if err != nil {
		return fmt.Errorf("notary vkey: %w", err)
	}
	verifiers := []note.Verifier{notary}
	for _, file := range cosigners {
		v, err := newCosignatureVerifier(readLine(file))
		if err != nil {
			return fmt.Errorf("cosigner vkey %s: %w", file, err)
		}
		verifiers = append(verifiers, v)
	}
	known := note.VerifierList(verifiers...)

	// 1. The current checkpoint: signed by the notary and cosigned by every cosigner.
	current, signers, err := openCheckpoint(mustRead(filepath.Join(logDir, "checkpoint")), known, origin, verifiers)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	rep := report{Origin: origin, Size: current.N, Root: current.Hash.String(), Signers: signers}

	// 2. The tiles: tlog's TileHashReader checks every tile it reads against the checkpoint's tree hash.
	hashes := tlog.TileHashReader(current, tiles{dir: logDir})
	root, err := tlog.TreeHash(current.N, hashes)
	if err != nil {
		return fmt.Errorf("tree hash from tiles: %w", err)
	}
	if root != current.Hash {
		return fmt.Errorf("tiles give root %s, checkpoint says %s", root, current.Hash)
	}

	// 3. Every entry bundle: each entry's record hash is the level-0 hash the tiles hold.
	checked, err := checkEntries(logDir, current.N, hashes)
	if err != nil {
		return err
	}
	rep.EntriesChecked = checked

	// 4. Receipts: parse, open their checkpoint, check the inclusion proof with tlog.CheckRecord.
	for _, file := range receipts {
		index, err := checkReceipt(mustRead(file), known, origin, verifiers, logDir, hashes, current)
		if err != nil {
			return fmt.Errorf("receipt %s: %w", filepath.Base(file), err)
		}
		rep.ReceiptsChecked = append(rep.ReceiptsChecked, index)
	}

	// 5. Consistency: the add-checkpoint body's proof from the old checkpoint to the current one.
	if oldFile != "" || consistencyFile != "" {
		if oldFile == "" || consistencyFile == "" {
			return errors.New("-old and -consistency go together")
		}
		old, _, err := openCheckpoint(mustRead(oldFile), known, origin, verifiers[:1])
		if err != nil {
			return fmt.Errorf("old checkpoint: %w", err)
		}
		same, err := checkConsistency(mustRead(consistencyFile), old, current, known, origin, verifiers[:1], hashes)
		if err != nil {
			return fmt.Errorf("consistency: %w", err)
		}
		rep.ConsistencyFrom = old.N
		rep.ConsistencySameAsGo = same
	}

	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	return nil
}

// ---- checkpoints (c2sp.org/tlog-checkpoint) -----------------------------------------------------------

// openCheckpoint opens a signed note with note.Open and requires a valid signature by each of required.
func openCheckpoint(msg []byte, known note.Verifiers, origin string, required []note.Verifier) (tlog.Tree, []string, error) {
	n, err := note.Open(msg, known)
	if err != nil {
		return tlog.Tree{}, nil, fmt.Errorf("note.Open: %w", err)
	}
	var names []string
	for _, v := range required {
		found := false
		for _, sig := range n.Sigs {
			if sig.Name == v.Name() && sig.Hash == v.KeyHash() {
				found = true
			}
		}
		if !found {
			return tlog.Tree{}, nil, fmt.Errorf("no valid signature by %s", v.Name())
		}
		names = append(names, v.Name())
	}
	tree, err := parseCheckpoint(n.Text, origin)
	return tree, names, err
}

func parseCheckpoint(text, origin string) (tlog.Tree, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return tlog.Tree{}, errors.New("checkpoint has fewer than 3 lines")
	}
	if lines[0] != origin {
		return tlog.Tree{}, fmt.Errorf("origin %q, want %q", lines[0], origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return tlog.Tree{}, fmt.Errorf("bad tree size %q", lines[1])
	}
	hash, err := decodeHash(lines[2])
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("root: %w", err)
	}
	return tlog.Tree{N: size, Hash: hash}, nil
}

// ---- cosignatures (c2sp.org/tlog-cosignature, signature type 0x04) -----------------------------------

const algCosignatureV1 = 0x04

type cosignatureVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

// newCosignatureVerifier parses a vkey "<name>+<8 hex key hash>+<base64(0x04 || 32-byte Ed25519 key)>".
func newCosignatureVerifier(vkey string) (note.Verifier, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hashHex, keyB64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || name == "" {
		return nil, errors.New("malformed vkey")
	}
	hash, err := strconv.ParseUint(hashHex, 16, 32)
	if err != nil || len(hashHex) != 8 {
		return nil, errors.New("malformed key hash")
	}
	key, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != algCosignatureV1 {
		return nil, errors.New("not a cosignature/v1 Ed25519 key")
	}
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte("\n"))
	h.Write(key)
	if binary.BigEndian.Uint32(h.Sum(nil)) != uint32(hash) {
		return nil, errors.New("key hash does not match")
	}
	return &cosignatureVerifier{name: name, hash: uint32(hash), key: ed25519.PublicKey(key[1:])}, nil
}

func (v *cosignatureVerifier) Name() string    { return v.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.hash }

// Verify checks a timestamped cosignature: 8-byte big-endian time, then an Ed25519 signature over
// "cosignature/v1\ntime <time>\n" followed by the note text.
func (v *cosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	timestamp := binary.BigEndian.Uint64(sig[:8])
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", timestamp)), msg...)
	return ed25519.Verify(v.key, signed, sig[8:])
}

// ---- tiles (c2sp.org/tlog-tiles) ------------------------------------------------------------------------

// tiles reads a C2SP tlog-tiles directory for tlog. tlog names a tile "tile/8/L/N" (its height is 8, as
// C2SP fixes it) and a data tile "tile/8/data/N"; C2SP drops the height and calls data tiles "entries".
type tiles struct{ dir string }

func (t tiles) Height() int { return 8 }

func (t tiles) ReadTiles(list []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(list))
	for i, tile := range list {
		data, err := os.ReadFile(filepath.Join(t.dir, c2spPath(tile)))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func c2spPath(tile tlog.Tile) string {
	p := strings.TrimPrefix(tile.Path(), "tile/8/")
	if tile.L == -1 {
		p = "entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// checkEntries reads every entry bundle below size and compares each entry's record hash with the tiles.
func checkEntries(dir string, size int64, hashes tlog.HashReader) (int64, error) {
	var index int64
	for start := int64(0); start < size; start += 256 {
		width := size - start
		if width > 256 {
			width = 256
		}
		tile := tlog.Tile{H: 8, L: -1, N: start / 256, W: int(width)}
		data, err := os.ReadFile(filepath.Join(dir, c2spPath(tile)))
		if err != nil {
			return index, fmt.Errorf("entry bundle: %w", err)
		}
		for i := int64(0); i < width; i++ {
			if len(data) < 2 {
				return index, fmt.Errorf("entry bundle %d ends early", tile.N)
			}
			length := int(binary.BigEndian.Uint16(data))
			if len(data) < 2+length {
				return index, fmt.Errorf("entry bundle %d ends early", tile.N)
			}
			entry := data[2 : 2+length]
			data = data[2+length:]
			stored, err := hashes.ReadHashes([]int64{tlog.StoredHashIndex(0, index)})
			if err != nil {
				return index, fmt.Errorf("leaf %d: %w", index, err)
			}
			if tlog.RecordHash(entry) != stored[0] {
				return index, fmt.Errorf("entry %d does not hash to its leaf", index)
			}
			index++
		}
		if len(data) != 0 {
			return index, fmt.Errorf("entry bundle %d has trailing bytes", tile.N)
		}
	}
	return index, nil
}

// ---- receipts (c2sp.org/tlog-proof@v1) ------------------------------------------------------------------

func checkReceipt(data []byte, known note.Verifiers, origin string, required []note.Verifier, dir string, hashes tlog.HashReader, current tlog.Tree) (int64, error) {
	head, checkpoint, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		return 0, errors.New("no blank line")
	}
	lines := strings.Split(string(head), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		return 0, fmt.Errorf("header %q", lines[0])
	}
	lines = lines[1:]
	var entry []byte
	if len(lines) > 0 && strings.HasPrefix(lines[0], "extra ") {
		var err error
		if entry, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[0], "extra ")); err != nil {
			return 0, fmt.Errorf("extra: %w", err)
		}
		lines = lines[1:]
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "index ") {
		return 0, errors.New("no index line")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil || index < 0 {
		return 0, errors.New("bad index")
	}
	var proof tlog.RecordProof
	for _, line := range lines[1:] {
		h, err := decodeHash(line)
		if err != nil {
			return 0, fmt.Errorf("proof hash: %w", err)
		}
		proof = append(proof, h)
	}
	tree, _, err := openCheckpoint(checkpoint, known, origin, required)
	if err != nil {
		return 0, fmt.Errorf("its checkpoint: %w", err)
	}
	if entry == nil {
		return 0, errors.New("no entry in the extra line")
	}
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, tlog.RecordHash(entry)); err != nil {
		return 0, fmt.Errorf("tlog.CheckRecord: %w", err)
	}
	// The same leaf, proved by tlog from our tiles against the current checkpoint.
	ours, err := tlog.ProveRecord(current.N, index, hashes)
	if err != nil {
		return 0, fmt.Errorf("tlog.ProveRecord: %w", err)
	}
	if err := tlog.CheckRecord(ours, current.N, current.Hash, index, tlog.RecordHash(entry)); err != nil {
		return 0, fmt.Errorf("entry not at index %d of the tiles: %w", index, err)
	}
	return index, nil
}

// ---- consistency (tlog-witness add-checkpoint body) ------------------------------------------------------

func checkConsistency(body []byte, old, current tlog.Tree, known note.Verifiers, origin string, required []note.Verifier, hashes tlog.HashReader) (bool, error) {
	head, checkpoint, ok := bytes.Cut(body, []byte("\n\n"))
	if !ok {
		return false, errors.New("no blank line")
	}
	lines := strings.Split(string(head), "\n")
	size, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "old "), 10, 64)
	if err != nil || !strings.HasPrefix(lines[0], "old ") || size != old.N {
		return false, fmt.Errorf("old line %q does not name size %d", lines[0], old.N)
	}
	var proof tlog.TreeProof
	for _, line := range lines[1:] {
		h, err := decodeHash(line)
		if err != nil {
			return false, fmt.Errorf("proof hash: %w", err)
		}
		proof = append(proof, h)
	}
	tree, _, err := openCheckpoint(checkpoint, known, origin, required)
	if err != nil {
		return false, fmt.Errorf("its checkpoint: %w", err)
	}
	if tree != current {
		return false, fmt.Errorf("proof is to tree %d, the log's checkpoint is %d", tree.N, current.N)
	}
	if err := tlog.CheckTree(proof, current.N, current.Hash, old.N, old.Hash); err != nil {
		return false, fmt.Errorf("tlog.CheckTree: %w", err)
	}
	goProof, err := tlog.ProveTree(current.N, old.N, hashes)
	if err != nil {
		return false, fmt.Errorf("tlog.ProveTree: %w", err)
	}
	same := len(goProof) == len(proof)
	for i := 0; same && i < len(proof); i++ {
		same = goProof[i] == proof[i]
	}
	return same, nil
}

// ---- helpers -----------------------------------------------------------------------------------------------

func decodeHash(text string) (tlog.Hash, error) {
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != tlog.HashSize {
		return tlog.Hash{}, fmt.Errorf("not a base64 SHA-256 hash: %q", text)
	}
	var h tlog.Hash
	copy(h[:], raw)
	return h, nil
}

func mustRead(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(1)
	}
	return data
}

func readLine(path string) string {
	return strings.TrimSpace(string(mustRead(path)))
}
