package deliverytest

import (
	"testing"
)

// Scenario is one worker case of the test catalogue, written against an
// Env so that it runs unchanged on every backend: the local store with the
// memory and file checkpoint stores, and a remote fleet source with the KV
// checkpoint store (the † cases).
type Scenario struct {
	ID   string // catalogue id, e.g. "WRK-05"
	Name string // short CamelCase description
	// Run runs the scenario. It calls newEnv for every fresh journal it
	// needs, so each scenario starts on an empty journal (seq 0 is
	// OPEN_COMPLETED, user events start at 1).
	Run func(t *testing.T, newEnv NewEnv)
}

// RunWorkerScenarios runs every scenario of WorkerScenarios as a subtest
// named ID_Name.
func RunWorkerScenarios(t *testing.T, newEnv NewEnv) {
	for _, sc := range WorkerScenarios() {
		t.Run(sc.ID+"_"+sc.Name, func(t *testing.T) { sc.Run(t, newEnv) })
	}
}

// WorkerScenarios returns the worker scenarios in catalogue order.
//
// Conventions: every scenario appends to its own entity and runs workers on
// an entity-prefix region, so lifecycle events never reach a handler; seqs
// come from the receipts, so "eN" of the catalogue is seqs[N-1]. Waits are
// bounded by deadlines (eventually, joinWithin), never decided by sleeps;
// timing cases assert upper bounds only.
func WorkerScenarios() []Scenario {
	return []Scenario{
		{"CK-04", "WitnessCarriesCheckpointID", scenarioCK04},
		{"CKP-03", "NoRecordStartsFreshAndCreatesOnFirstBatch", scenarioCKP03},
		{"CKP-04", "CorruptRecordFailsStart", scenarioCKP04},
		{"CKP-05", "CorruptRecordFailsEvenWhenStoppedAtOnce", scenarioCKP05},
		{"CKP-07", "RecordOfAnotherRegion", scenarioCKP07},
		{"CKP-10", "SaveFailureOnStop", scenarioCKP10},
		{"CKP-11", "ResumeAcrossWriterRestart", scenarioCKP11},
		{"CKP-13", "SaveFailureOnContinueKeepsRecord", scenarioCKP13},
		{"CKP-14", "JournalBinding", scenarioCKP14},
		{"CKP-15", "AheadOfTheJournal", scenarioCKP15},
		{"CKP-16", "TwoWorkersOneCheckpoint", scenarioCKP16},
		{"CKP-18", "SaveWritesOwnerAndWallClock", scenarioCKP18},
		{"WRK-01", "DefaultConfig", scenarioWRK01},
		{"WRK-02", "WitnessOnEveryBatch", scenarioWRK02},
		{"WRK-03", "StopOnFirstBatch", scenarioWRK03},
		{"WRK-04", "StopWithRollbackKeepsCommitted", scenarioWRK04},
		{"WRK-05", "RedeliveryCountsAcrossRuns", scenarioWRK05},
		{"WRK-06", "RollbackOnFirstBatchWritesNothing", scenarioWRK06},
		{"WRK-07", "PublishWakesIdleWorker", scenarioWRK07},
		{"WRK-08", "StopInterruptsIdlePark", scenarioWRK08},
		{"WRK-09", "StopDuringHandlerCompletesBatch", scenarioWRK09},
		{"WRK-10", "CancelledStartContextReleasesSource", scenarioWRK10},
		{"WRK-11", "BatchSizes", scenarioWRK11},
		{"WRK-12", "InMemoryWorkerRedeliversAll", scenarioWRK12},
		{"WRK-13", "JoinReturnsFirstErrorToEveryCall", scenarioWRK13},
		{"WRK-14", "SourcePanicIsWorkerCrash", scenarioWRK14},
		{"WRK-15", "InvalidStartRejected", scenarioWRK15},
		{"GAP-10", "HandlerGapsEqualCursorGaps", scenarioGAP10},
		{"RST-01", "BoundedOneShotPanic", scenarioRST01},
		{"RST-02", "BoundedAlwaysPanics", scenarioRST02},
		{"RST-03", "OnceAlwaysPanicsFiresHookOnce", scenarioRST03},
		{"RST-04", "BoundedZeroNeverRestarts", scenarioRST04},
		{"RST-05", "WindowResetsAfterWithin", scenarioRST05},
		{"RST-08", "RestartResumesFromCommittedWithoutReload", scenarioRST08},
		{"RST-09", "PanicText", scenarioRST09},
		{"OUT-01", "SaveReplyLostAfterItLanded", scenarioOUT01},
		{"OUT-02", "SaveUnavailableRetried", scenarioOUT02},
		{"OUT-03", "StopDuringOutageAbandonsCommit", scenarioOUT03},
		{"OUT-04", "LoadUnavailableAtStart", scenarioOUT04},
		{"OUT-05", "OutageBound", scenarioOUT05},
		{"OUT-06", "ConflictFoundByReconcile", scenarioOUT06},
		{"OUT-07", "ConflictThatLandedIsAdopted", scenarioOUT07},
		{"OUT-08", "ConflictWithRecordUnmovedRetried", scenarioOUT08},
		{"PSN-01", "NamedFailureCommitsTheEntriesBefore", scenarioPSN01},
		{"PSN-02", "UnnamedFailureBisected", scenarioPSN02},
		{"PSN-03", "ExhaustedWithoutParkingRestarts", scenarioPSN03},
		{"PSN-04", "PoisonedEntityParkedOthersFlow", scenarioPSN04},
		{"PSN-05", "ParkedSetSurvivesRestartAndHandOver", scenarioPSN05},
		{"PSN-06", "ReplayAndDrop", scenarioPSN06},
	}
}
